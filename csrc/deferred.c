/* deferred.c -- DeferredCore, the C half of cdeferred.Deferred.
 *
 * Design
 * ======
 * cdeferred.Deferred is `class Deferred(DeferredCore, twisted...Deferred)`:
 * DeferredCore comes first in the MRO, so every method defined here wins,
 * while instances are still instances of Twisted's class (isinstance holds,
 * Twisted's __init_subclass__ registers us in _DEFERRED_SUBCLASSES, and the
 * rarely used methods we do not define -- addTimeout, asFuture, fromFuture,
 * fromCoroutine -- are Twisted's own, running on top of ours).
 *
 * State.  A Deferred is pending (no result: `result` is absent), or called
 * (CDEF_CALLED, d_result set).  A called Deferred may be paused: by pause(),
 * or because a callback returned a Deferred without a result, in which case
 * d_result *is* that Deferred and `_chainedTo` points at it.
 *
 * Storage.  Twisted keeps a list of ((cb, args, kw), (eb, args, kw)) tuples:
 * three tuples and usually a dict per link.  We keep a C array of cdef_link
 * in a side block (cdef_chain) that also holds the rarely used fields, so a
 * bare Deferred is a 72-byte object.  Twisted's code does reach into other
 * Deferreds' `_callbacks` (its _runCallbacks appends continuations to the
 * Deferred a callback returned; inlineCallbacks' cancellation swaps the list
 * out and back), so reading `_callbacks` materialises the chain as exactly
 * Twisted's list and that Deferred stays in "list mode": the list is then the
 * one truth, and every operation here goes through chain_push / chain_pop,
 * which understand both forms.  A link with a canceller materialises as a
 * 3-tuple whose third item is (canceller, args, kwargs); Twisted only indexes
 * item[0] and item[1], so its own loop runs such links unchanged.
 *
 * The run loop is iterative, as Twisted's: a Deferred whose callback returned
 * an unfired Deferred parks a continuation link on it; when that one fires,
 * the loop moves to the waiting Deferred through an explicit stack instead of
 * recursing, so chains of any depth resolve in constant C stack.  A waiting
 * Deferred that is not ours (a Twisted Deferred returned to us) is handed its
 * result and run by its own _runCallbacks; Twisted's loop drives our
 * Deferreds through their attributes, so mixed chains stay iterative too.
 *
 * The third chain.  cancel() walks the pending links last-added-first calling
 * their cancellers, then the creator's canceller, then errbacks with
 * CancelledError -- or, when the Deferred waits on another one, cancels that
 * one, whatever its kind (DESIGN.md section 3.2).
 *
 * References.  Nothing here keeps a borrowed pointer across a call into
 * Python: links are moved out of the array before their callback runs, and
 * the array may have been reallocated by the time it returns.
 */
#include "cdeferred.h"
#include <stddef.h>

#define LINK_CAPACITY_START 4

/* What `await d` returns; see the end of this file. */
typedef struct {
    PyObject_HEAD
    PyObject *it_deferred;
} AwaitIterObject;

/* ============================================================ type tests */

int
cdef_is_failure(cdef_state *st, PyObject *op)
{
    /* Failure derives from BaseException (checked at import): one flag test
     * rejects every ordinary result before the MRO walk. */
    if (!PyExceptionInstance_Check(op)) {
        return 0;
    }
    return PyObject_TypeCheck(op, (PyTypeObject *)st->Failure);
}

/* Twisted recognises Deferreds by `type(x) in _DEFERRED_SUBCLASSES`, not by
 * isinstance: a class that is not in that list is a plain value to chaining.
 * Matching that exactly keeps mixed chains behaving the same either way. */
int
cdef_is_deferred(cdef_state *st, PyObject *op)
{
    PyObject *subclasses = st->deferred_subclasses;
    PyObject *tp = (PyObject *)Py_TYPE(op);
    if (!PyType_HasFeature(Py_TYPE(op), Py_TPFLAGS_HEAPTYPE)) {
        return 0; /* every Deferred class is a class statement's */
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(subclasses); i++) {
        if (PyList_GET_ITEM(subclasses, i) == tp) {
            return 1;
        }
    }
    return 0;
}

/* `self.debug`, as Twisted reads it; see cdef_state.debug_cache_*. */
int
cdef_debug_enabled(cdef_state *st, DeferredObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    int no_instance_attrs = self->d_dict == NULL
                            || PyDict_GET_SIZE(self->d_dict) == 0;
    if (no_instance_attrs && tp == st->debug_cache_type
        && PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG)
        && tp->tp_version_tag == st->debug_cache_tag) {
        return st->debug_cache_value;
    }
    int on = 0;
    PyObject *value = PyObject_GetAttr((PyObject *)self, st->str_debug);
    if (value != NULL) {
        on = PyObject_IsTrue(value);
        Py_DECREF(value);
    }
    else if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear(); /* a bare DeferredCore: Twisted's class is not a base */
    }
    else {
        return -1;
    }
    if (on >= 0 && no_instance_attrs
        && PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG)) {
        /* Borrowed: a type that dies takes its version tag with it, and
         * tags are never reused while the type is alive. */
        st->debug_cache_type = tp;
        st->debug_cache_tag = tp->tp_version_tag;
        st->debug_cache_value = on;
    }
    return on;
}

#ifdef CDEF_DEBUG
/* The invariants of cdef_chain and of the flags, checked in debug builds. */
void
cdef_assert_consistent(DeferredObject *self)
{
    cdef_chain *chain = self->d_chain;
    if (chain != NULL) {
        assert(chain->head >= 0 && chain->count >= 0);
        assert(chain->head + chain->count <= chain->capacity);
        assert(chain->list == NULL || chain->count == 0);
        assert(chain->list == NULL || PyList_Check(chain->list));
        for (Py_ssize_t i = 0; i < chain->count; i++) {
            cdef_link *link = &chain->links[chain->head + i];
            /* Only a continuation keeps a non-tuple (its waiter) there. */
            assert(link->callback_args == NULL
                   || link->callback == link->errback
                   || PyTuple_Check(link->callback_args));
            assert(link->callback_kwargs == NULL
                   || PyDict_Check(link->callback_kwargs));
            assert(link->errback_kwargs == NULL
                   || PyDict_Check(link->errback_kwargs));
        }
        for (Py_ssize_t i = chain->head + chain->count; i < chain->capacity;
             i++) {
            assert(chain->links[i].callback == NULL
                   && chain->links[i].errback == NULL
                   && chain->links[i].canceller == NULL);
        }
    }
    assert(!(self->d_flags & CDEF_DEACTIVATED)
           || (self->d_flags & CDEF_CONTROLLABLE));
    assert(!(self->d_flags & CDEF_UNHANDLED) || self->d_result != NULL);
    if (self->d_flags & CDEF_CONTROLLABLE) {
        ControllableObject *cd = (ControllableObject *)self;
        /* Fired or deactivated means cut loose from upstream. */
        assert(cd->cd_upstream == NULL
               || !(self->d_flags & (CDEF_CALLED | CDEF_DEACTIVATED)));
    }
}
#endif

/* The result, borrowed; or NULL with Twisted's AttributeError when there is
 * none although the Deferred counts as called (`called` set by hand, `del
 * d.result`, or code run meanwhile that deleted it). */
static PyObject *
require_result(DeferredObject *self)
{
    if (self->d_result == NULL) {
        PyErr_Format(PyExc_AttributeError,
                     "'%.100s' object has no attribute 'result'",
                     Py_TYPE(self)->tp_name);
    }
    return self->d_result;
}

/* ========================================================= chain storage */

/* The side block, made with room for `capacity` links when it is new. */
static cdef_chain *
chain_ensure_capacity(DeferredObject *self, Py_ssize_t capacity)
{
    if (self->d_chain == NULL) {
        cdef_chain *chain = PyMem_Calloc(
            1, offsetof(cdef_chain, links)
                   + (size_t)capacity * sizeof(cdef_link));
        if (chain == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        chain->capacity = capacity;
        self->d_chain = chain;
    }
    return self->d_chain;
}

static cdef_chain *
chain_ensure(DeferredObject *self)
{
    return chain_ensure_capacity(self, 0);
}

static void
link_clear(cdef_link *link)
{
    Py_CLEAR(link->callback);
    Py_CLEAR(link->callback_args);
    Py_CLEAR(link->callback_kwargs);
    Py_CLEAR(link->errback);
    Py_CLEAR(link->errback_args);
    Py_CLEAR(link->errback_kwargs);
    Py_CLEAR(link->canceller);
}

static int
link_is_continuation(cdef_state *st, const cdef_link *link)
{
    return link->callback == st->CONTINUE;
}

/* Normalise what callers pass as args/kwargs: NULL stands for "none", so the
 * common case costs nothing to store or to call.  Twisted accepts None for
 * both (the old defaults) and any mapping for kwargs. */
static int
normalise_args(cdef_state *st, PyObject *args, PyObject **out)
{
    if (args == NULL || args == Py_None
        || (PyTuple_Check(args) && PyTuple_GET_SIZE(args) == 0)) {
        *out = NULL;
        return 0;
    }
    if (PyTuple_Check(args)) {
        *out = Py_NewRef(args);
        return 0;
    }
    *out = PySequence_Tuple(args);
    return *out == NULL ? -1 : 0;
}

static int
normalise_kwargs(cdef_state *st, PyObject *kwargs, PyObject **out)
{
    if (kwargs == NULL || kwargs == Py_None || kwargs == st->NONE_KWARGS) {
        *out = NULL;
        return 0;
    }
    if (PyDict_Check(kwargs)) {
        *out = PyDict_GET_SIZE(kwargs) ? Py_NewRef(kwargs) : NULL;
        return 0;
    }
    PyObject *copy = PyDict_New();
    if (copy == NULL) {
        return -1;
    }
    if (PyDict_Merge(copy, kwargs, 1) < 0) {
        Py_DECREF(copy);
        return -1;
    }
    *out = copy;
    return 0;
}

/* --- list mode: conversions between cdef_link and Twisted's tuples ----- */

static PyObject *
triple_new(PyObject *fn, PyObject *args, PyObject *kwargs)
{
    PyObject *triple = PyTuple_New(3);
    if (triple == NULL) {
        return NULL;
    }
    PyObject *a = args ? Py_NewRef(args) : PyTuple_New(0);
    PyObject *k = kwargs ? Py_NewRef(kwargs) : PyDict_New();
    if (a == NULL || k == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(k);
        Py_DECREF(triple);
        return NULL;
    }
    PyTuple_SET_ITEM(triple, 0, Py_NewRef(fn));
    PyTuple_SET_ITEM(triple, 1, a);
    PyTuple_SET_ITEM(triple, 2, k);
    return triple;
}

static PyObject *
canceller_triple(PyObject *canceller)
{
    if (PyTuple_CheckExact(canceller)) {
        return Py_NewRef(canceller);
    }
    return triple_new(canceller, NULL, NULL);
}

/* The tuple Twisted would have stored for this link. */
static PyObject *
link_to_tuple(cdef_state *st, const cdef_link *link)
{
    PyObject *cb = NULL, *eb = NULL, *cn = NULL, *item = NULL;
    if (link_is_continuation(st, link)) {
        PyObject *waiter = PyTuple_Pack(1, link->callback_args);
        if (waiter == NULL) {
            return NULL;
        }
        cb = PyTuple_Pack(3, st->CONTINUE, waiter, st->NONE_KWARGS);
        Py_DECREF(waiter);
        if (cb == NULL) {
            return NULL;
        }
        item = PyTuple_Pack(2, cb, cb);
        Py_DECREF(cb);
        return item;
    }
    cb = triple_new(link->callback ? link->callback : st->passthru,
                    link->callback_args, link->callback_kwargs);
    eb = triple_new(link->errback ? link->errback : st->failthru,
                    link->errback_args, link->errback_kwargs);
    if (cb != NULL && eb != NULL) {
        if (link->canceller == NULL) {
            item = PyTuple_Pack(2, cb, eb);
        }
        else if ((cn = canceller_triple(link->canceller)) != NULL) {
            item = PyTuple_Pack(3, cb, eb, cn);
        }
    }
    Py_XDECREF(cb);
    Py_XDECREF(eb);
    Py_XDECREF(cn);
    return item;
}

static int
unpack_triple(PyObject *triple, PyObject **fn, PyObject **args,
              PyObject **kwargs)
{
    if (!PyTuple_Check(triple) || PyTuple_GET_SIZE(triple) != 3) {
        PyErr_Format(PyExc_TypeError,
                     "a Deferred callback entry must be a "
                     "(callable, args, kwargs) tuple, not %R", triple);
        return -1;
    }
    *fn = PyTuple_GET_ITEM(triple, 0);
    *args = PyTuple_GET_ITEM(triple, 1);
    *kwargs = PyTuple_GET_ITEM(triple, 2);
    return 0;
}

/* Fill one side (callback or errback) of a link from a Twisted triple.
 * passthru/_failthru without arguments become NULL: skipping them is what
 * calling them would do. */
static int
side_from_triple(cdef_state *st, PyObject *triple, PyObject *identity,
                 PyObject **fn_out, PyObject **args_out, PyObject **kw_out)
{
    PyObject *fn, *args, *kwargs;
    if (unpack_triple(triple, &fn, &args, &kwargs) < 0) {
        return -1;
    }
    if (normalise_args(st, args, args_out) < 0) {
        return -1;
    }
    if (normalise_kwargs(st, kwargs, kw_out) < 0) {
        return -1;
    }
    if (fn == identity && *args_out == NULL && *kw_out == NULL) {
        *fn_out = NULL;
    }
    else {
        *fn_out = Py_NewRef(fn);
    }
    return 0;
}

static int
link_from_tuple(cdef_state *st, PyObject *item, cdef_link *link)
{
    memset(link, 0, sizeof(*link));
    Py_ssize_t n = PyTuple_Check(item) ? PyTuple_GET_SIZE(item) : 0;
    if (n != 2 && n != 3) {
        PyErr_Format(PyExc_TypeError,
                     "a Deferred's _callbacks must hold (callback, errback) "
                     "pairs, not %R", item);
        return -1;
    }
    PyObject *first = PyTuple_GET_ITEM(item, 0);
    PyObject *fn, *args, *kwargs;
    if (unpack_triple(first, &fn, &args, &kwargs) < 0) {
        return -1;
    }
    if (fn == st->CONTINUE) {
        if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) != 1) {
            PyErr_SetString(PyExc_TypeError,
                            "a continuation must carry (waiting Deferred,)");
            return -1;
        }
        link->callback = Py_NewRef(st->CONTINUE);
        link->errback = Py_NewRef(st->CONTINUE);
        link->callback_args = Py_NewRef(PyTuple_GET_ITEM(args, 0));
        return 0;
    }
    if (side_from_triple(st, first, st->passthru, &link->callback,
                         &link->callback_args, &link->callback_kwargs) < 0
        || side_from_triple(st, PyTuple_GET_ITEM(item, 1), st->failthru,
                            &link->errback, &link->errback_args,
                            &link->errback_kwargs) < 0) {
        link_clear(link);
        return -1;
    }
    if (n == 3) {
        PyObject *cargs = NULL, *ckwargs = NULL;
        if (unpack_triple(PyTuple_GET_ITEM(item, 2), &fn, &args, &kwargs) < 0
            || normalise_args(st, args, &cargs) < 0
            || normalise_kwargs(st, kwargs, &ckwargs) < 0) {
            Py_XDECREF(cargs);
            link_clear(link);
            return -1;
        }
        if (cargs == NULL && ckwargs == NULL) {
            link->canceller = Py_NewRef(fn);
        }
        else {
            link->canceller = triple_new(fn, cargs, ckwargs);
        }
        Py_XDECREF(cargs);
        Py_XDECREF(ckwargs);
        if (link->canceller == NULL) {
            link_clear(link);
            return -1;
        }
    }
    return 0;
}

/* Move the pending links and the list out of the chain, leaving it empty.
 * No Python code runs here; the caller releases what it took with
 * release_detached() once the chain is in the state it wants, because
 * releasing can run __del__ methods that add links to this very Deferred
 * (see test_callbacks_reassigned_while_old_links_add_callbacks). */
typedef struct {
    cdef_link *links;
    Py_ssize_t count;
    PyObject *list;
} detached_links;

static int
chain_detach(DeferredObject *self, detached_links *out)
{
    cdef_chain *chain = self->d_chain;
    out->links = NULL;
    out->count = 0;
    out->list = NULL;
    if (chain == NULL) {
        return 0;
    }
    if (chain->count > 0) {
        out->links = PyMem_Malloc((size_t)chain->count * sizeof(cdef_link));
        if (out->links == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(out->links, &chain->links[chain->head],
               (size_t)chain->count * sizeof(cdef_link));
        memset(&chain->links[chain->head], 0,
               (size_t)chain->count * sizeof(cdef_link));
        out->count = chain->count;
    }
    chain->head = chain->count = 0;
    out->list = chain->list;
    chain->list = NULL;
    return 0;
}

static void
release_detached(detached_links *taken)
{
    for (Py_ssize_t i = 0; i < taken->count; i++) {
        link_clear(&taken->links[i]);
    }
    PyMem_Free(taken->links);
    Py_XDECREF(taken->list);
}

/* Switch to list mode: the array becomes Twisted's list.  Building the
 * tuples allocates, and an allocation can start a garbage collection whose
 * finalizers add links here or fire this Deferred (moving the array under
 * our feet): the collector is held off while the links are read. */
static PyObject *
chain_materialise(cdef_state *st, DeferredObject *self)
{
    cdef_chain *chain = chain_ensure(self);
    if (chain == NULL) {
        return NULL;
    }
    if (chain->list != NULL) {
        return chain->list;
    }
    int gc_was_enabled = PyGC_Disable();
    PyObject *list = PyList_New(chain->count);
    for (Py_ssize_t i = 0; list != NULL && i < chain->count; i++) {
        PyObject *item = link_to_tuple(st, &chain->links[chain->head + i]);
        if (item == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, item);
    }
    detached_links taken;
    if (list != NULL && chain_detach(self, &taken) < 0) {
        Py_CLEAR(list);
    }
    if (list != NULL) {
        self->d_chain->list = list;
    }
    if (gc_was_enabled) {
        PyGC_Enable();
    }
    if (list == NULL) {
        return NULL;
    }
    release_detached(&taken);
    return self->d_chain->list;
}

/* Append a link, taking ownership of its references (also on failure). */
static int
chain_push(cdef_state *st, DeferredObject *self, cdef_link *link)
{
    cdef_chain *chain = chain_ensure_capacity(self, LINK_CAPACITY_START);
    if (chain == NULL) {
        link_clear(link);
        return -1;
    }
    if (chain->list != NULL) {
        PyObject *item = link_to_tuple(st, link);
        link_clear(link);
        if (item == NULL) {
            return -1;
        }
        int rc = PyList_Append(chain->list, item);
        Py_DECREF(item);
        return rc;
    }
    if (chain->head + chain->count == chain->capacity) {
        if (chain->head > 0) {
            /* Links are popped from the front: reuse that room first. */
            memmove(&chain->links[0], &chain->links[chain->head],
                    (size_t)chain->count * sizeof(cdef_link));
            /* Unused slots stay zeroed: stale copies would look owned. */
            memset(&chain->links[chain->count], 0,
                   (size_t)chain->head * sizeof(cdef_link));
            chain->head = 0;
        }
        else {
            Py_ssize_t capacity = chain->capacity ? chain->capacity * 2
                                                  : LINK_CAPACITY_START;
            size_t size = offsetof(cdef_chain, links)
                          + (size_t)capacity * sizeof(cdef_link);
            cdef_chain *grown = PyMem_Realloc(chain, size);
            if (grown == NULL) {
                link_clear(link);
                PyErr_NoMemory();
                return -1;
            }
            chain = self->d_chain = grown;
            memset(&chain->links[chain->capacity], 0,
                   (size_t)(capacity - chain->capacity) * sizeof(cdef_link));
            chain->capacity = capacity;
        }
    }
    chain->links[chain->head + chain->count] = *link;
    chain->count++;
    CDEF_ASSERT_CONSISTENT(self);
    return 0;
}

/* Move the first pending link into *link.  1: got one, 0: none, -1: error. */
static int
chain_pop(cdef_state *st, DeferredObject *self, cdef_link *link)
{
    cdef_chain *chain = self->d_chain;
    if (chain == NULL) {
        return 0;
    }
    if (chain->list != NULL) {
        PyObject *list = chain->list;
        if (PyList_GET_SIZE(list) == 0) {
            return 0;
        }
        PyObject *item = Py_NewRef(PyList_GET_ITEM(list, 0));
        if (PyList_SetSlice(list, 0, 1, NULL) < 0) {
            Py_DECREF(item);
            return -1;
        }
        int rc = link_from_tuple(st, item, link);
        Py_DECREF(item);
        return rc < 0 ? -1 : 1;
    }
    if (chain->count == 0) {
        return 0;
    }
    cdef_link *first = &chain->links[chain->head];
    *link = *first;
    memset(first, 0, sizeof(*first));
    chain->head++;
    if (--chain->count == 0) {
        chain->head = 0;
    }
    CDEF_ASSERT_CONSISTENT(self);
    return 1;
}

int
cdef_drop_links(DeferredObject *self)
{
    detached_links taken;
    if (chain_detach(self, &taken) < 0) {
        return -1;
    }
    release_detached(&taken);
    return 0;
}

static PyObject *
chained_to(DeferredObject *self)
{
    return self->d_chain ? self->d_chain->chained_to : NULL;
}

int
cdef_set_chained_to(DeferredObject *self, PyObject *value)
{
    if (value == Py_None) {
        value = NULL;
    }
    if (value == NULL && self->d_chain == NULL) {
        return 0;
    }
    cdef_chain *chain = chain_ensure(self);
    if (chain == NULL) {
        return -1;
    }
    Py_XSETREF(chain->chained_to, Py_XNewRef(value));
    return 0;
}

/* ============================================= unhandled-failure tracking */

/* Twisted's `_debugInfo.failResult`: which Failure to report if this
 * Deferred is collected now.  Without a DebugInfo object a flag stands in
 * for it (the Failure is d_result); the object is only made when debugging,
 * when Python code reads `_debugInfo`, or at collection. */
static int
set_fail_result(cdef_state *st, DeferredObject *self, PyObject *failure)
{
    PyObject *info = self->d_chain ? self->d_chain->debug_info : NULL;
    if (info == NULL) {
        if (failure) {
            self->d_flags |= CDEF_UNHANDLED;
        }
        else {
            self->d_flags &= ~CDEF_UNHANDLED;
        }
        return 0;
    }
    return PyObject_SetAttr(info, st->str_failResult,
                            failure ? failure : Py_None);
}

/* The `_debugInfo` Twisted code expects to find. */
static PyObject *
debug_info_get(cdef_state *st, DeferredObject *self)
{
    PyObject *info = self->d_chain ? self->d_chain->debug_info : NULL;
    if (info != NULL) {
        return Py_NewRef(info);
    }
    if (!(self->d_flags & CDEF_UNHANDLED) || self->d_result == NULL) {
        Py_RETURN_NONE;
    }
    info = PyObject_CallNoArgs(st->DebugInfo);
    if (info == NULL) {
        return NULL;
    }
    PyObject *result = Py_NewRef(self->d_result);
    int rc = PyObject_SetAttr(info, st->str_failResult, result);
    Py_DECREF(result);
    /* Python code ran: only now find the (possibly new) side block. */
    if (rc < 0 || chain_ensure(self) == NULL) {
        Py_DECREF(info);
        return NULL;
    }
    self->d_flags &= ~CDEF_UNHANDLED;
    Py_XSETREF(self->d_chain->debug_info, Py_NewRef(info));
    return info;
}

/* ========================================================= calling out */

/* Call fn(result, *args, **kwargs) with the arguments on the C stack. */
#define SMALL_STACK 8

static PyObject *
call_with_result(PyObject *fn, PyObject *first, PyObject *args,
                 PyObject *kwargs)
{
    Py_ssize_t nargs = args ? PyTuple_GET_SIZE(args) : 0;
    PyObject *small[SMALL_STACK + 1];
    PyObject **stack = small;
    if (nargs + 2 > SMALL_STACK + 1) {
        stack = PyMem_Malloc((size_t)(nargs + 2) * sizeof(PyObject *));
        if (stack == NULL) {
            return PyErr_NoMemory();
        }
    }
    /* All references in the stack are borrowed: args is kept alive by the
     * caller's link, first by the caller. */
    stack[1] = first;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        stack[i + 2] = PyTuple_GET_ITEM(args, i);
    }
    PyObject *res;
    if (kwargs == NULL) {
        res = PyObject_Vectorcall(fn, stack + 1,
                                  (size_t)(nargs + 1)
                                      | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                  NULL);
    }
    else {
        res = PyObject_VectorcallDict(fn, stack + 1, (size_t)(nargs + 1),
                                      kwargs);
    }
    if (stack != small) {
        PyMem_Free(stack);
    }
    return res;
}

/* ========================================================== the run loop */

/* Attribute access on a Deferred that is not ours, for the loop below. */
static int
foreign_add_to_paused(cdef_state *st, PyObject *d, long delta)
{
    PyObject *paused = PyObject_GetAttr(d, st->str_paused);
    if (paused == NULL) {
        return -1;
    }
    long value = PyLong_AsLong(paused);
    Py_DECREF(paused);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *updated = PyLong_FromLong(value + delta);
    if (updated == NULL) {
        return -1;
    }
    int rc = PyObject_SetAttr(d, st->str_paused, updated);
    Py_DECREF(updated);
    return rc;
}

static PyObject *
continuation_tuple(cdef_state *st, PyObject *waiter)
{
    cdef_link link = {.callback = st->CONTINUE, .callback_args = waiter};
    return link_to_tuple(st, &link);
}

/* Park `waiter` on `inner` (Twisted: inner._callbacks.append(
 * waiter._continuation())). */
static int
append_continuation(cdef_state *st, PyObject *inner, DeferredObject *waiter)
{
    if (cdef_is_core(st, inner)) {
        cdef_link link = {
            .callback = Py_NewRef(st->CONTINUE),
            .errback = Py_NewRef(st->CONTINUE),
            .callback_args = Py_NewRef(waiter),
        };
        return chain_push(st, (DeferredObject *)inner, &link);
    }
    PyObject *list = PyObject_GetAttr(inner, st->str_callbacks);
    if (list == NULL) {
        return -1;
    }
    PyObject *item = continuation_tuple(st, (PyObject *)waiter);
    int rc = item ? PyList_Append(list, item) : -1;
    Py_XDECREF(item);
    Py_DECREF(list);
    return rc;
}

/* Read another Deferred's result (NULL if it has none), its paused count,
 * and whether its result is itself a Deferred. */
static int
peek_result(cdef_state *st, PyObject *d, PyObject **result, long *paused)
{
    if (cdef_is_core(st, d)) {
        *result = Py_XNewRef(((DeferredObject *)d)->d_result);
        *paused = ((DeferredObject *)d)->d_paused;
        return 0;
    }
    *result = PyObject_GetAttr(d, st->str_result);
    if (*result == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear(); /* no result yet */
    }
    PyObject *p = PyObject_GetAttr(d, st->str_paused);
    if (p == NULL) {
        Py_CLEAR(*result);
        return -1;
    }
    int truth = PyObject_IsTrue(p);
    Py_DECREF(p);
    if (truth < 0) {
        Py_CLEAR(*result);
        return -1;
    }
    *paused = truth;
    return 0;
}

/* Take a fired Deferred's result, leaving None (Twisted's "steal"). */
static int
steal_result(cdef_state *st, PyObject *d)
{
    if (cdef_is_core(st, d)) {
        DeferredObject *inner = (DeferredObject *)d;
        Py_XSETREF(inner->d_result, Py_NewRef(Py_None));
        return set_fail_result(st, inner, NULL);
    }
    if (PyObject_SetAttr(d, st->str_result, Py_None) < 0) {
        return -1;
    }
    PyObject *info = PyObject_GetAttr(d, st->str_debugInfo);
    if (info == NULL) {
        return -1;
    }
    int rc = 0;
    if (info != Py_None) {
        rc = PyObject_SetAttr(info, st->str_failResult, Py_None);
    }
    Py_DECREF(info);
    return rc;
}

/* Hand `result` to a Deferred that was waiting for it and lower its pause
 * count (Twisted: chainee.result = ...; chainee.paused -= 1). */
static int
resume_waiter(cdef_state *st, PyObject *waiter, PyObject *result)
{
    if (cdef_is_core(st, waiter)) {
        DeferredObject *w = (DeferredObject *)waiter;
        Py_XSETREF(w->d_result, Py_NewRef(result));
        w->d_paused--;
        return 0;
    }
    if (PyObject_SetAttr(waiter, st->str_result, result) < 0) {
        return -1;
    }
    return foreign_add_to_paused(st, waiter, -1);
}

typedef struct {
    PyObject **items;
    Py_ssize_t size;
    Py_ssize_t capacity;
    PyObject *small[8];
} run_stack;

static int
run_stack_push(run_stack *stack, PyObject *d)
{
    if (stack->size == stack->capacity) {
        Py_ssize_t capacity = stack->capacity * 2;
        PyObject **items;
        if (stack->items == stack->small) {
            items = PyMem_Malloc((size_t)capacity * sizeof(PyObject *));
            if (items != NULL) {
                memcpy(items, stack->small,
                       (size_t)stack->size * sizeof(PyObject *));
            }
        }
        else {
            items = PyMem_Realloc(stack->items,
                                  (size_t)capacity * sizeof(PyObject *));
        }
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        stack->items = items;
        stack->capacity = capacity;
    }
    stack->items[stack->size++] = Py_NewRef(d);
    return 0;
}

static void
run_stack_release(run_stack *stack)
{
    while (stack->size > 0) {
        Py_DECREF(stack->items[--stack->size]);
    }
    if (stack->items != stack->small) {
        PyMem_Free(stack->items);
    }
}

/* Twisted warns when a callback returns the Deferred it is attached to. */
static int
warn_returned_self(cdef_state *st, DeferredObject *current, PyObject *fn,
                   int capture_vars)
{
    PyObject *r = PyObject_CallFunction(
        st->warnAboutFunction, "Os", fn,
        "Callback returned the Deferred it was attached to; this breaks the "
        "callback chain and will raise an exception in the future.");
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    /* Warnings turned into errors: inside Twisted's try block, so the error
     * becomes the result, like any raised by a callback. */
    PyObject *failure = cdef_failure_from_error(st, capture_vars);
    if (failure == NULL) {
        return -1;
    }
    Py_XSETREF(current->d_result, failure);
    return 0;
}

/* A callback returned the Deferred `inner`: take its result if it has one,
 * otherwise pause `current` and park a continuation on `inner`.  Returns 1
 * when `current` now waits, 0 when it goes on, -1 on error. */
static int
chain_to_returned(cdef_state *st, DeferredObject *current, PyObject *inner)
{
    PyObject *inner_result;
    long inner_paused;
    if (peek_result(st, inner, &inner_result, &inner_paused) < 0) {
        return -1;
    }
    int rc;
    if (inner_result == NULL || inner_paused
        || cdef_is_deferred(st, inner_result)) {
        current->d_paused++;
        rc = cdef_set_chained_to(current, inner);
        if (rc == 0) {
            rc = append_continuation(st, inner, current);
        }
        rc = rc < 0 ? -1 : 1;
    }
    else {
        rc = steal_result(st, inner);
        if (rc == 0) {
            Py_XSETREF(current->d_result, Py_NewRef(inner_result));
        }
    }
    Py_XDECREF(inner_result);
    return rc;
}

/* Run one link's callback or errback on `current`.  Returns 1 if the loop
 * must stop processing `current` (it now waits on another Deferred), 0 to
 * go on, -1 on an internal error. */
static int
run_link(cdef_state *st, DeferredObject *current, cdef_link *link,
         int capture_vars)
{
    if (require_result(current) == NULL) {
        return -1;
    }
    int failed = cdef_is_failure(st, current->d_result);
    PyObject *fn = failed ? link->errback : link->callback;
    PyObject *value;
    if (fn == NULL) {
        /* passthru / _failthru: nothing to call.  But a Deferred passed
         * through is chained to, as when Twisted's passthru returns it. */
        if (failed || !cdef_is_deferred(st, current->d_result)) {
            return 0;
        }
        fn = st->passthru;
        value = Py_NewRef(current->d_result);
    }
    else {
        PyObject *args = failed ? link->errback_args : link->callback_args;
        PyObject *kwargs = failed ? link->errback_kwargs
                                  : link->callback_kwargs;
        current->d_flags |= CDEF_RUNNING;
        PyObject *result = current->d_result; /* kept alive by the call */
        Py_INCREF(result);
        value = call_with_result(fn, result, args, kwargs);
        Py_DECREF(result);
        if (value != NULL) {
            /* Stored while still "running", as Twisted assigns inside its
             * try block: a __del__ of the old result that adds callbacks
             * must not start a nested run. */
            Py_XSETREF(current->d_result, Py_NewRef(value));
        }
        current->d_flags &= ~CDEF_RUNNING;
    }

    if (value == NULL) {
        value = cdef_failure_from_error(st, capture_vars);
        if (value == NULL) {
            return -1;
        }
        Py_XSETREF(current->d_result, value);
        return 0;
    }
    /* d_result holds `value` too, but Python code run below (a warning
     * filter, a Deferred's attributes) could replace it: ours is kept. */
    int rc = 0;
    if (value == (PyObject *)current) {
        rc = warn_returned_self(st, current, fn, capture_vars);
    }
    if (rc == 0 && cdef_is_deferred(st, value)) {
        rc = chain_to_returned(st, current, value);
    }
    Py_DECREF(value);
    return rc;
}

/* Twisted's _runCallbacks. */
static int
run_callbacks(cdef_state *st, DeferredObject *self)
{
    if (self->d_flags & CDEF_RUNNING) {
        return 0; /* already running further up the stack */
    }
    int capture_vars = cdef_debug_enabled(st, self);
    if (capture_vars < 0) {
        return -1;
    }
    run_stack stack = {.items = NULL, .size = 0, .capacity = 8};
    stack.items = stack.small;
    int rc = run_stack_push(&stack, (PyObject *)self);

    while (rc == 0 && stack.size > 0) {
        PyObject *top = stack.items[stack.size - 1];
        if (!cdef_is_core(st, top)) {
            /* A Twisted Deferred that was waiting on one of ours: it has its
             * result now; its own loop runs it (and ours, should it meet
             * them, through their attributes -- still without recursion). */
            PyObject *r = PyObject_CallMethodNoArgs(top, st->str_runCallbacks);
            if (r == NULL) {
                rc = -1;
                break;
            }
            Py_DECREF(r);
            Py_DECREF(top);
            stack.size--;
            continue;
        }
        DeferredObject *current = (DeferredObject *)top;
        if (current->d_paused) {
            /* No result to pass on: everything below waits too. */
            break;
        }
        int finished = 1;
        if (cdef_set_chained_to(current, NULL) < 0) {
            rc = -1;
            break;
        }
        for (;;) {
            cdef_link link;
            int got = chain_pop(st, current, &link);
            if (got <= 0) {
                rc = got;
                break;
            }
            if (link_is_continuation(st, &link)) {
                /* Give the waiting Deferred our result and forget it. */
                PyObject *waiter = link.callback_args;
                PyObject *result = Py_XNewRef(require_result(current));
                rc = result ? resume_waiter(st, waiter, result) : -1;
                Py_XDECREF(result);
                if (rc == 0) {
                    Py_XSETREF(current->d_result, Py_NewRef(Py_None));
                    rc = set_fail_result(st, current, NULL);
                }
                if (rc == 0) {
                    rc = run_stack_push(&stack, waiter);
                }
                link_clear(&link);
                /* Finish `current` only after the waiter is done with. */
                finished = 0;
                break;
            }
            int stop = run_link(st, current, &link, capture_vars);
            link_clear(&link);
            if (stop != 0) {
                rc = stop < 0 ? -1 : 0;
                break;
            }
        }
        if (rc < 0 || !finished) {
            continue;
        }
        /* As much of this chain as can run now has run. */
        PyObject *result = Py_XNewRef(require_result(current));
        rc = result ? set_fail_result(st, current,
                                      cdef_is_failure(st, result) ? result
                                                                  : NULL)
                    : -1;
        Py_XDECREF(result);
        CDEF_ASSERT_CONSISTENT(current);
        stack.size--;
        Py_DECREF(current);
    }
    run_stack_release(&stack);
    return rc;
}

/* ================================================================ firing */

static int
raise_already_called(cdef_state *st, DeferredObject *self, int debug)
{
    if (!debug) {
        PyErr_SetNone(st->AlreadyCalledError);
        return -1;
    }
    PyObject *info = self->d_chain ? self->d_chain->debug_info : NULL;
    PyObject *text = info ? PyObject_CallMethodNoArgs(
                                info, st->str_getDebugTracebacks)
                          : PyUnicode_FromString("");
    if (text == NULL) {
        return -1;
    }
    PyObject *extra = PyUnicode_FromFormat("\n%U", text);
    Py_DECREF(text);
    if (extra != NULL) {
        PyErr_SetObject(st->AlreadyCalledError, extra);
        Py_DECREF(extra);
    }
    return -1;
}

/* Debug mode: remember who fired this Deferred, in its DebugInfo. */
static int
record_invoker(cdef_state *st, DeferredObject *self)
{
    PyObject *info = self->d_chain ? Py_XNewRef(self->d_chain->debug_info)
                                   : NULL;
    if (info == NULL) {
        info = PyObject_CallNoArgs(st->DebugInfo);
        /* Python code ran: only now find the (possibly new) side block. */
        if (info == NULL || chain_ensure(self) == NULL) {
            Py_XDECREF(info);
            return -1;
        }
        Py_XSETREF(self->d_chain->debug_info, Py_NewRef(info));
    }
    PyObject *r = PyObject_CallOneArg(st->recordInvoker, info);
    Py_DECREF(info);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* A ControllableDeferred that fired or was deactivated consumes whatever
 * is delivered later, silently (the first fire wins). */
static int
controllable_swallows(DeferredObject *self)
{
    return (self->d_flags & CDEF_CONTROLLABLE)
           && (self->d_flags & (CDEF_CALLED | CDEF_DEACTIVATED));
}

/* Twisted's _startRunCallbacks, plus ControllableDeferred's cut: a
 * controllable Deferred that can no longer fire swallows the call, and one
 * fired before its upstream delivered cancels that upstream. */
int
cdef_fire(cdef_state *st, DeferredObject *self, PyObject *result)
{
    PyObject *upstream = NULL;
    if (self->d_flags & CDEF_CONTROLLABLE) {
        if (controllable_swallows(self)) {
            return 0;
        }
        /* Fired before upstream delivered: the cut.  Detach now, so the
         * delivery its cancellation causes is swallowed; cancel after. */
        upstream = cdef_controllable_take_upstream(self);
    }
    int debug = cdef_debug_enabled(st, self);
    if (debug < 0) {
        goto error;
    }
    if (self->d_flags & CDEF_CALLED) {
        if (self->d_flags & CDEF_SUPPRESS) {
            self->d_flags &= ~CDEF_SUPPRESS;
            return 0;
        }
        return raise_already_called(st, self, debug);
    }
    if (debug && record_invoker(st, self) < 0) {
        goto error;
    }
    self->d_flags |= CDEF_CALLED;
    /* The canceller is never called after firing; dropping it breaks the
     * cycles it usually closes (it tends to reference this Deferred). */
    if (self->d_chain != NULL) {
        Py_CLEAR(self->d_chain->canceller);
    }
    Py_XSETREF(self->d_result, Py_NewRef(result));
    if (run_callbacks(st, self) < 0) {
        goto error;
    }
    CDEF_ASSERT_CONSISTENT(self);
    if (upstream != NULL) {
        int rc = cdef_cancel_any(st, upstream, NULL);
        Py_DECREF(upstream);
        return rc;
    }
    return 0;

error:
    Py_XDECREF(upstream);
    return -1;
}

int
cdef_errback(cdef_state *st, DeferredObject *self, PyObject *fail)
{
    PyObject *failure;
    if (controllable_swallows(self)) {
        return 0; /* before building a Failure: there may be no exception */
    }
    if (fail == NULL || fail == Py_None) {
        int debug = cdef_debug_enabled(st, self);
        if (debug < 0) {
            return -1;
        }
        failure = cdef_failure_from_handled(st, debug);
    }
    else if (cdef_is_failure(st, fail)) {
        failure = Py_NewRef(fail);
    }
    else {
        failure = cdef_failure_from_exception(st, fail);
    }
    if (failure == NULL) {
        return -1;
    }
    int rc = cdef_fire(st, self, failure);
    Py_DECREF(failure);
    return rc;
}

/* Fire `self` with what a Deferred delivers, as if a callback of self had
 * returned it: its result now if it has one, else when it comes.  In two
 * steps for the coroutine driver's cancellation, which (as Twisted's does
 * from an errback) must look called and running while it cancels what the
 * coroutine waits on: cdef_follow_begin, then cdef_follow_end with the
 * Deferred to follow -- or with a Failure, which self then fires with. */
int
cdef_follow_begin(cdef_state *st, DeferredObject *self)
{
    if (self->d_flags & CDEF_CALLED) {
        return raise_already_called(st, self, 0);
    }
    self->d_flags |= CDEF_CALLED | CDEF_RUNNING;
    if (self->d_chain != NULL) {
        Py_CLEAR(self->d_chain->canceller);
    }
    Py_XSETREF(self->d_result, Py_NewRef(Py_None));
    return 0;
}

int
cdef_follow_end(cdef_state *st, DeferredObject *self, PyObject *outcome)
{
    self->d_flags &= ~CDEF_RUNNING;
    Py_XSETREF(self->d_result, Py_NewRef(outcome));
    int rc = 0;
    if (cdef_is_deferred(st, outcome)) {
        rc = chain_to_returned(st, self, outcome);
    }
    if (rc == 0) {
        rc = run_callbacks(st, self);
    }
    return rc < 0 ? -1 : 0;
}

/* What addBoth(f) would hand f at once -- taken as a callback returning
 * None takes it: `op` keeps None and its Failure counts as handled.  Only
 * for one of ours with a result, not paused, running or holding links;
 * otherwise NULL without an exception, and the caller goes through addBoth. */
PyObject *
cdef_take_ready_result(cdef_state *st, PyObject *op)
{
    if (!cdef_is_core(st, op)) {
        return NULL;
    }
    DeferredObject *d = (DeferredObject *)op;
    cdef_chain *chain = d->d_chain;
    if (!(d->d_flags & CDEF_CALLED) || (d->d_flags & CDEF_RUNNING)
        || d->d_paused != 0 || d->d_result == NULL
        || (chain != NULL && (chain->count != 0 || chain->list != NULL))
        || cdef_is_deferred(st, d->d_result)) {
        return NULL;
    }
    PyObject *result = d->d_result;
    d->d_result = Py_NewRef(Py_None);
    if (cdef_set_chained_to(d, NULL) < 0 || set_fail_result(st, d, NULL) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* ========================================================== cancellation */

static int
call_canceller(cdef_state *st, PyObject *canceller, DeferredObject *self)
{
    PyObject *r;
    if (PyTuple_CheckExact(canceller)) {
        PyObject *fn, *args, *kwargs;
        if (unpack_triple(canceller, &fn, &args, &kwargs) < 0) {
            return -1;
        }
        r = call_with_result(fn, (PyObject *)self, args, kwargs);
    }
    else {
        r = PyObject_CallOneArg(canceller, (PyObject *)self);
    }
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Take the canceller of the last pending link that has one out of the
 * chain, so it can run at most once.  NULL without an exception: none left.
 * One at a time, because a canceller may add links, fire this Deferred or
 * cancel it again (see test_cancelFromInsideCanceller). */
static PyObject *
take_last_canceller(cdef_state *st, DeferredObject *self)
{
    cdef_chain *chain = self->d_chain;
    if (chain == NULL) {
        return NULL;
    }
    if (chain->list == NULL) {
        for (Py_ssize_t i = chain->count - 1; i >= 0; i--) {
            cdef_link *link = &chain->links[chain->head + i];
            if (link->canceller != NULL) {
                PyObject *canceller = link->canceller;
                link->canceller = NULL;
                return canceller;
            }
        }
        return NULL;
    }
    PyObject *list = chain->list;
    for (Py_ssize_t i = PyList_GET_SIZE(list) - 1; i >= 0; i--) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            continue;
        }
        /* The slice allocates: no collection (and so no finalizer editing
         * this list) may run between reading `item` and replacing it. */
        int gc_was_enabled = PyGC_Disable();
        PyObject *pair = PyTuple_GetSlice(item, 0, 2);
        if (gc_was_enabled) {
            PyGC_Enable();
        }
        if (pair == NULL) {
            return NULL;
        }
        PyObject *canceller = Py_NewRef(PyTuple_GET_ITEM(item, 2));
        /* Runs no Python code: every item of `item` is still referenced. */
        PyList_SetItem(list, i, pair);
        return canceller;
    }
    return NULL;
}

/* A canceller raised an Exception: log it and let cancellation go on. */
static int
report_canceller_failure(cdef_state *st, PyObject *canceller,
                         DeferredObject *self)
{
    PyObject *failure = cdef_failure_from_error(st, 0);
    if (failure == NULL) {
        return -1;
    }
    PyObject *fn = PyTuple_CheckExact(canceller)
                       ? PyTuple_GET_ITEM(canceller, 0) : canceller;
    PyObject *r = PyObject_CallFunctionObjArgs(st->logCancellerFailure, failure,
                                               fn, (PyObject *)self, NULL);
    Py_DECREF(failure);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Run the cancellers of the links that have not run, last added first (the
 * innermost user frees its resources first).  `waiting_on` is the Deferred
 * this one waits on, or NULL if it has no result yet.  Stops when a canceller
 * gives this Deferred its result (fires it, or fires what it waits on): the
 * links further up then run with that result instead, and lose their
 * cancellers as links that ran do. */
int
cdef_run_link_cancellers(cdef_state *st, DeferredObject *self,
                         PyObject *waiting_on)
{
    for (;;) {
        int got_result = waiting_on ? self->d_result != waiting_on
                                    : (self->d_flags & CDEF_CALLED) != 0;
        if (got_result) {
            return 0;
        }
        PyObject *canceller = take_last_canceller(st, self);
        if (canceller == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        int rc = call_canceller(st, canceller, self);
        if (rc < 0 && PyErr_ExceptionMatches(PyExc_Exception)) {
            rc = report_canceller_failure(st, canceller, self);
        }
        Py_DECREF(canceller);
        if (rc < 0) {
            return -1; /* KeyboardInterrupt, SystemExit: stop everything */
        }
    }
}

/* Twisted's handling of Deferred(canceller=...): call it, or, without one,
 * arrange to swallow the responder's eventual callback. */
int
cdef_creator_canceller(cdef_state *st, DeferredObject *self)
{
    /* Held: its __bool__ is Python code that may drop it from the chain. */
    PyObject *canceller = self->d_chain ? Py_XNewRef(self->d_chain->canceller)
                                        : NULL;
    int truth = canceller ? PyObject_IsTrue(canceller) : 0;
    if (truth <= 0) {
        Py_XDECREF(canceller);
        if (truth < 0) {
            return -1;
        }
        self->d_flags |= CDEF_SUPPRESS;
        return 0;
    }
    PyObject *r = PyObject_CallOneArg(canceller, (PyObject *)self);
    Py_DECREF(canceller);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
is_called(DeferredObject *self)
{
    return (self->d_flags & CDEF_CALLED) != 0;
}

static PyObject *
cancelled_failure(cdef_state *st, PyObject *msg)
{
    PyObject *exc = (msg == NULL || msg == Py_None)
                        ? PyObject_CallNoArgs(st->CancelledError)
                        : PyObject_CallOneArg(st->CancelledError, msg);
    if (exc == NULL) {
        return NULL;
    }
    PyObject *failure = cdef_failure_from_exception(st, exc);
    Py_DECREF(exc);
    return failure;
}

int
cdef_cancel(cdef_state *st, DeferredObject *self, PyObject *msg)
{
    if (!is_called(self)) {
        if (self->d_flags & CDEF_DEACTIVATED) {
            return 0;
        }
        if (cdef_run_link_cancellers(st, self, NULL) < 0) {
            return -1;
        }
        if (!is_called(self) && cdef_creator_canceller(st, self) < 0) {
            return -1;
        }
        if (!is_called(self) && (self->d_flags & CDEF_CONTROLLABLE)
            && cdef_controllable_release(st, self, msg) < 0) {
            return -1;
        }
        if (is_called(self)) {
            return 0;
        }
        PyObject *failure = cancelled_failure(st, msg);
        if (failure == NULL) {
            return -1;
        }
        int rc = cdef_fire(st, self, failure);
        Py_DECREF(failure);
        return rc;
    }
    PyObject *waiting_on = Py_XNewRef(require_result(self));
    if (waiting_on == NULL) {
        return -1;
    }
    int rc = PyObject_IsInstance(waiting_on, st->TwistedDeferred);
    if (rc <= 0) {
        Py_DECREF(waiting_on);
        return rc; /* fired, waiting on nothing: nothing to do */
    }
    rc = cdef_run_link_cancellers(st, self, waiting_on);
    if (rc == 0 && self->d_result == waiting_on) {
        rc = cdef_cancel_any(st, waiting_on, msg);
    }
    Py_DECREF(waiting_on);
    return rc;
}

/* Cancel any kind of Deferred: cdeferred's (C or the Python reference) get
 * the message, others (Twisted's cancel() takes none) are cancelled plainly:
 * the chain is never cut. */
int
cdef_cancel_any(cdef_state *st, PyObject *deferred, PyObject *msg)
{
    PyObject *r;
    int takes_msg = cdef_is_core(st, deferred)
                    || PyObject_TypeCheck(deferred, st->PyDeferredType);
    if (msg != NULL && msg != Py_None && takes_msg) {
        r = PyObject_CallMethodOneArg(deferred, st->str_cancel, msg);
    }
    else {
        r = PyObject_CallMethodNoArgs(deferred, st->str_cancel);
    }
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* ================================================== argument handling */

static cdef_state *
state_of(PyTypeObject *defining_class)
{
    return (cdef_state *)PyType_GetModuleState(defining_class);
}

/* Match positional and keyword arguments to `names`; missing optional ones
 * are left NULL.  All references are borrowed. */
int
cdef_parse_args(const char *fname, const char *const *names, Py_ssize_t nnames,
           Py_ssize_t required, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames, PyObject **out)
{
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most %zd positional arguments (%zd given)",
                     fname, nnames, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nnames; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        for (; i < nnames; i++) {
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                break;
            }
        }
        if (i == nnames) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'",
                         fname, key);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'", fname,
                         names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

/* For addCallback(fn, *args, **kwargs) and its siblings: fn (positional or
 * by keyword `name`), the rest as a tuple and a dict, NULL when empty. */
static int
parse_fn_args_kwargs(const char *fname, const char *name,
                     PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, PyObject **fn, PyObject **rest,
                     PyObject **kwargs)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    Py_ssize_t fn_kw = -1;
    *fn = *rest = *kwargs = NULL;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, k),
                                             name) == 0) {
            fn_kw = k;
            break;
        }
    }
    if (nargs > 0 && fn_kw >= 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s() got multiple values for argument '%s'", fname,
                     name);
        return -1;
    }
    *fn = nargs > 0 ? args[0] : fn_kw >= 0 ? args[nargs + fn_kw] : NULL;
    if (*fn == NULL) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'",
                     fname, name);
        return -1;
    }
    if (nargs > 1) {
        *rest = PyTuple_New(nargs - 1);
        if (*rest == NULL) {
            return -1;
        }
        for (Py_ssize_t i = 1; i < nargs; i++) {
            PyTuple_SET_ITEM(*rest, i - 1, Py_NewRef(args[i]));
        }
    }
    if (nkw > (fn_kw >= 0 ? 1 : 0)) {
        *kwargs = PyDict_New();
        if (*kwargs == NULL) {
            Py_CLEAR(*rest);
            return -1;
        }
        for (Py_ssize_t k = 0; k < nkw; k++) {
            if (k != fn_kw
                && PyDict_SetItem(*kwargs, PyTuple_GET_ITEM(kwnames, k),
                                  args[nargs + k]) < 0) {
                Py_CLEAR(*rest);
                Py_CLEAR(*kwargs);
                return -1;
            }
        }
    }
    return 0;
}

/* ============================================================== methods */

int
cdef_add_link(cdef_state *st, DeferredObject *self, cdef_link *link)
{
    if (chain_push(st, self, link) < 0) {
        return -1;
    }
    if ((self->d_flags & CDEF_CALLED) && run_callbacks(st, self) < 0) {
        return -1;
    }
    return 0;
}

/* addCallbacks and friends return self. */
static PyObject *
add_link(cdef_state *st, DeferredObject *self, cdef_link *link)
{
    return cdef_add_link(st, self, link) < 0 ? NULL : Py_NewRef(self);
}

static const char *const addCallbacks_names[] = {
    "callback", "errback", "callbackArgs", "callbackKeywords",
    "errbackArgs", "errbackKeywords", "canceller",
};

static PyObject *
Deferred_addCallbacks(DeferredObject *self, PyTypeObject *cls,
                      PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    cdef_state *st = state_of(cls);
    PyObject *a[7];
    if (cdef_parse_args("addCallbacks", addCallbacks_names, 7, 1, args, nargs,
                   kwnames, a) < 0) {
        return NULL;
    }
    cdef_link link = {0};
    if (a[6] != NULL && a[6] != Py_None) {
        if (!PyCallable_Check(a[6])) {
            PyErr_Format(PyExc_TypeError, "canceller must be callable, not %R",
                         a[6]);
            return NULL;
        }
        link.canceller = Py_NewRef(a[6]);
    }
    link.callback = Py_NewRef(a[0]);
    if (a[1] != NULL && a[1] != Py_None) {
        link.errback = Py_NewRef(a[1]);
    }
    if (normalise_args(st, a[2], &link.callback_args) < 0
        || normalise_kwargs(st, a[3], &link.callback_kwargs) < 0
        || normalise_args(st, a[4], &link.errback_args) < 0
        || normalise_kwargs(st, a[5], &link.errback_kwargs) < 0) {
        link_clear(&link);
        return NULL;
    }
    return add_link(st, self, &link);
}

enum link_kind { LINK_CALLBACK, LINK_ERRBACK, LINK_BOTH, LINK_CANCELLER };

/* addCallback / addErrback / addBoth / addCanceller: one parser, one
 * builder; only which fields the function and its arguments fill differs. */
static PyObject *
add_single(DeferredObject *self, PyTypeObject *cls, PyObject *const *args,
           Py_ssize_t nargs, PyObject *kwnames, const char *fname,
           const char *name, enum link_kind kind)
{
    cdef_state *st = state_of(cls);
    PyObject *fn, *rest, *kwargs;
    if (parse_fn_args_kwargs(fname, name, args, nargs, kwnames, &fn, &rest,
                             &kwargs) < 0) {
        return NULL;
    }
    cdef_link link = {0};
    switch (kind) {
    case LINK_CALLBACK:
        link.callback = Py_NewRef(fn);
        link.callback_args = rest;
        link.callback_kwargs = kwargs;
        break;
    case LINK_ERRBACK:
        link.errback = Py_NewRef(fn);
        link.errback_args = rest;
        link.errback_kwargs = kwargs;
        break;
    case LINK_BOTH:
        link.callback = Py_NewRef(fn);
        link.errback = Py_NewRef(fn);
        link.callback_args = Py_XNewRef(rest);
        link.callback_kwargs = Py_XNewRef(kwargs);
        link.errback_args = rest;
        link.errback_kwargs = kwargs;
        break;
    case LINK_CANCELLER:
        if (!PyCallable_Check(fn)) {
            PyErr_Format(PyExc_TypeError, "canceller must be callable, not %R",
                         fn);
            Py_XDECREF(rest);
            Py_XDECREF(kwargs);
            return NULL;
        }
        link.canceller = (rest || kwargs) ? triple_new(fn, rest, kwargs)
                                          : Py_NewRef(fn);
        Py_XDECREF(rest);
        Py_XDECREF(kwargs);
        if (link.canceller == NULL) {
            return NULL;
        }
        break;
    }
    return add_link(st, self, &link);
}

static PyObject *
Deferred_addCallback(DeferredObject *self, PyTypeObject *cls,
                     PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    return add_single(self, cls, args, nargs, kwnames, "addCallback",
                      "callback", LINK_CALLBACK);
}

static PyObject *
Deferred_addErrback(DeferredObject *self, PyTypeObject *cls,
                    PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return add_single(self, cls, args, nargs, kwnames, "addErrback",
                      "errback", LINK_ERRBACK);
}

static PyObject *
Deferred_addBoth(DeferredObject *self, PyTypeObject *cls,
                 PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return add_single(self, cls, args, nargs, kwnames, "addBoth", "callback",
                      LINK_BOTH);
}

static PyObject *
Deferred_addCanceller(DeferredObject *self, PyTypeObject *cls,
                      PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    return add_single(self, cls, args, nargs, kwnames, "addCanceller",
                      "canceller", LINK_CANCELLER);
}

static PyObject *
Deferred_callback(DeferredObject *self, PyTypeObject *cls,
                  PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"result"};
    PyObject *result;
    if (cdef_parse_args("callback", names, 1, 1, args, nargs, kwnames, &result)
        < 0) {
        return NULL;
    }
    if (cdef_fire(state_of(cls), self, result) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Deferred_errback(DeferredObject *self, PyTypeObject *cls,
                 PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"fail"};
    PyObject *fail;
    if (cdef_parse_args("errback", names, 1, 0, args, nargs, kwnames, &fail) < 0) {
        return NULL;
    }
    if (cdef_errback(state_of(cls), self, fail) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Deferred_startRunCallbacks(DeferredObject *self, PyTypeObject *cls,
                           PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    return Deferred_callback(self, cls, args, nargs, kwnames);
}

static PyObject *
Deferred_pause(DeferredObject *self, PyObject *Py_UNUSED(ignored))
{
    self->d_paused++;
    Py_RETURN_NONE;
}

static PyObject *
Deferred_unpause(DeferredObject *self, PyTypeObject *cls,
                 PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (cdef_parse_args("unpause", NULL, 0, 0, args, nargs, kwnames, NULL) < 0) {
        return NULL;
    }
    self->d_paused--;
    if (self->d_paused == 0 && (self->d_flags & CDEF_CALLED)
        && run_callbacks(state_of(cls), self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *get_result(DeferredObject *self, void *closure);

static PyObject *
Deferred_runCallbacks(DeferredObject *self, PyTypeObject *cls,
                      PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    if (cdef_parse_args("_runCallbacks", NULL, 0, 0, args, nargs, kwnames, NULL)
        < 0) {
        return NULL;
    }
    if (self->d_result == NULL) {
        /* What Twisted's loop meets first on a Deferred that never fired. */
        return get_result(self, NULL);
    }
    if (run_callbacks(state_of(cls), self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Deferred_cancel(DeferredObject *self, PyTypeObject *cls,
                PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"msg"};
    PyObject *msg;
    if (cdef_parse_args("cancel", names, 1, 0, args, nargs, kwnames, &msg) < 0) {
        return NULL;
    }
    if (cdef_cancel(state_of(cls), self, msg) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Deferred_continuation(DeferredObject *self, PyTypeObject *cls,
                      PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    if (cdef_parse_args("_continuation", NULL, 0, 0, args, nargs, kwnames, NULL)
        < 0) {
        return NULL;
    }
    return continuation_tuple(state_of(cls), (PyObject *)self);
}

/* d1.chainDeferred(d2): d2 follows d1.  Twisted's own method is just this;
 * it deliberately does not forward cancellation, and neither do we. */
static PyObject *
Deferred_chainDeferred(DeferredObject *self, PyTypeObject *cls,
                       PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames)
{
    static const char *const names[] = {"d"};
    PyObject *d;
    if (cdef_parse_args("chainDeferred", names, 1, 1, args, nargs, kwnames, &d)
        < 0) {
        return NULL;
    }
    cdef_state *st = state_of(cls);
    if (PyObject_SetAttr(d, st->str_chainedTo, (PyObject *)self) < 0) {
        return NULL;
    }
    cdef_link link = {0};
    link.callback = PyObject_GetAttrString(d, "callback");
    link.errback = PyObject_GetAttrString(d, "errback");
    if (link.callback == NULL || link.errback == NULL) {
        link_clear(&link);
        return NULL;
    }
    return add_link(st, self, &link);
}

static PyObject *
Deferred_await(DeferredObject *self)
{
    cdef_state *st = cdef_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    AwaitIterObject *it = (AwaitIterObject *)st->await_freelist;
    if (it != NULL) {
        st->await_freelist = it->it_deferred;
        st->await_free_count--;
        PyObject_Init((PyObject *)it, st->AwaitIterType);
    }
    else {
        it = PyObject_GC_New(AwaitIterObject, st->AwaitIterType);
        if (it == NULL) {
            return NULL;
        }
    }
    it->it_deferred = Py_NewRef(self);
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyObject *
Deferred_repr(DeferredObject *self)
{
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(self),
                                            "__name__");
    if (name == NULL) {
        return NULL;
    }
    PyObject *waiting = chained_to(self);
    PyObject *repr;
    if (waiting != NULL) {
        repr = PyUnicode_FromFormat("<%U at %p waiting on Deferred at %p>",
                                    name, self, waiting);
    }
    else if (self->d_result == NULL) {
        repr = PyUnicode_FromFormat("<%U at %p>", name, self);
    }
    else {
        PyObject *result = Py_NewRef(self->d_result);
        repr = PyUnicode_FromFormat("<%U at %p current result: %R>", name,
                                    self, result);
        Py_DECREF(result);
    }
    Py_DECREF(name);
    return repr;
}

/* =============================================================== init */

/* Everything starts zeroed: pending, no chain, not controllable. */
PyObject *
cdef_deferred_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    return type->tp_alloc(type, 0);
}

/* What __init__ does for both types: store the creator's canceller and, when
 * debugging, where the Deferred was created. */
int
cdef_init(cdef_state *st, DeferredObject *self, PyObject *canceller)
{
    if (canceller == Py_None) {
        canceller = NULL;
    }
    if (canceller != NULL || self->d_chain != NULL) {
        cdef_chain *chain = chain_ensure(self);
        if (chain == NULL) {
            return -1;
        }
        Py_XSETREF(chain->canceller, Py_XNewRef(canceller));
    }
    int debug = cdef_debug_enabled(st, self);
    if (debug < 0) {
        return -1;
    }
    if (debug) {
        PyObject *info = PyObject_CallNoArgs(st->recordCreator);
        /* Python code ran: only now find the (possibly new) side block. */
        if (info == NULL || chain_ensure(self) == NULL) {
            Py_XDECREF(info);
            return -1;
        }
        Py_XSETREF(self->d_chain->debug_info, info);
    }
    return 0;
}

static int
Deferred_init(DeferredObject *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"canceller", NULL};
    PyObject *canceller = NULL;
    /* Deferred() is by far the most common call: skip the parser. */
    if ((PyTuple_GET_SIZE(args) != 0 || kwargs != NULL)
        && !PyArg_ParseTupleAndKeywords(args, kwargs, "|O:Deferred", names,
                                        &canceller)) {
        return -1;
    }
    cdef_state *st = cdef_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return -1;
    }
    return cdef_init(st, self, canceller);
}

/* ============================================================ attributes */

static PyObject *
get_result(DeferredObject *self, void *closure)
{
    if (self->d_result == NULL) {
        PyErr_Format(PyExc_AttributeError,
                     "'%.100s' object has no attribute 'result'",
                     Py_TYPE(self)->tp_name);
        return NULL;
    }
    return Py_NewRef(self->d_result);
}

static int
set_result(DeferredObject *self, PyObject *value, void *closure)
{
    if (value == NULL && self->d_result == NULL) {
        PyErr_SetString(PyExc_AttributeError, "result");
        return -1;
    }
    Py_XSETREF(self->d_result, Py_XNewRef(value));
    return 0;
}

/* `called`, `_runningCallbacks` and `_suppressAlreadyCalled` are flag bits;
 * the getset closure says which. */
static PyObject *
get_flag(DeferredObject *self, void *flag)
{
    return PyBool_FromLong((self->d_flags & (uint32_t)(uintptr_t)flag) != 0);
}

static int
set_flag(DeferredObject *self, PyObject *value, void *flag)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0) {
        return -1;
    }
    if (truth) {
        self->d_flags |= (uint32_t)(uintptr_t)flag;
    }
    else {
        self->d_flags &= ~(uint32_t)(uintptr_t)flag;
    }
    return 0;
}

static PyObject *
get_paused(DeferredObject *self, void *closure)
{
    return PyLong_FromLong(self->d_paused);
}

static int
set_paused(DeferredObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete 'paused'");
        return -1;
    }
    long n = PyLong_AsLong(value);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (n < INT32_MIN || n > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "paused count out of range");
        return -1;
    }
    self->d_paused = (int32_t)n;
    return 0;
}

static PyObject *
get_chainedTo(DeferredObject *self, void *closure)
{
    PyObject *value = chained_to(self);
    return Py_NewRef(value ? value : Py_None);
}

static int
set_chainedTo(DeferredObject *self, PyObject *value, void *closure)
{
    return cdef_set_chained_to(self, value);
}

static PyObject *
get_canceller(DeferredObject *self, void *closure)
{
    PyObject *value = self->d_chain ? self->d_chain->canceller : NULL;
    return Py_NewRef(value ? value : Py_None);
}

static int
set_canceller(DeferredObject *self, PyObject *value, void *closure)
{
    if (value == Py_None) {
        value = NULL;
    }
    if (value == NULL && self->d_chain == NULL) {
        return 0;
    }
    cdef_chain *chain = chain_ensure(self);
    if (chain == NULL) {
        return -1;
    }
    Py_XSETREF(chain->canceller, Py_XNewRef(value));
    return 0;
}

static PyObject *
get_debugInfo(DeferredObject *self, void *closure)
{
    cdef_state *st = cdef_state_from_type(Py_TYPE(self));
    return st ? debug_info_get(st, self) : NULL;
}

static int
set_debugInfo(DeferredObject *self, PyObject *value, void *closure)
{
    if (value == Py_None) {
        value = NULL;
    }
    if (value == NULL && self->d_chain == NULL) {
        self->d_flags &= ~CDEF_UNHANDLED;
        return 0;
    }
    cdef_chain *chain = chain_ensure(self);
    if (chain == NULL) {
        return -1;
    }
    self->d_flags &= ~CDEF_UNHANDLED;
    Py_XSETREF(chain->debug_info, Py_XNewRef(value));
    return 0;
}

static PyObject *
get_callbacks(DeferredObject *self, void *closure)
{
    cdef_state *st = cdef_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    return Py_XNewRef(chain_materialise(st, self));
}

static int
set_callbacks(DeferredObject *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyList_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "_callbacks must be a list");
        return -1;
    }
    detached_links taken;
    if (chain_ensure(self) == NULL || chain_detach(self, &taken) < 0) {
        return -1;
    }
    /* The new list is in place before the old links go: what their
     * __del__ adds lands in it, as with Twisted's plain attribute. */
    self->d_chain->list = Py_NewRef(value);
    release_detached(&taken);
    return 0;
}

/* ================================================================ GC */

static int
Deferred_traverse(DeferredObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->d_result);
    Py_VISIT(self->d_dict);
    cdef_chain *chain = self->d_chain;
    if (chain != NULL) {
        Py_VISIT(chain->canceller);
        Py_VISIT(chain->chained_to);
        Py_VISIT(chain->debug_info);
        Py_VISIT(chain->list);
        for (Py_ssize_t i = 0; i < chain->count; i++) {
            cdef_link *link = &chain->links[chain->head + i];
            Py_VISIT(link->callback);
            Py_VISIT(link->callback_args);
            Py_VISIT(link->callback_kwargs);
            Py_VISIT(link->errback);
            Py_VISIT(link->errback_args);
            Py_VISIT(link->errback_kwargs);
            Py_VISIT(link->canceller);
        }
    }
    if (self->d_flags & CDEF_CONTROLLABLE) {
        Py_VISIT(((ControllableObject *)self)->cd_upstream);
    }
    if (self->d_flags & CDEF_LIST) {
        DeferredListObject *dl = (DeferredListObject *)self;
        Py_VISIT(dl->dl_deferreds);
        Py_VISIT(dl->dl_results);
        Py_VISIT(dl->dl_fire_on_one_callback);
        Py_VISIT(dl->dl_fire_on_one_errback);
        Py_VISIT(dl->dl_consume_errors);
        Py_VISIT(dl->dl_finished);
    }
    return 0;
}

static int
Deferred_clear(DeferredObject *self)
{
    Py_CLEAR(self->d_result);
    Py_CLEAR(self->d_dict);
    cdef_chain *chain = self->d_chain;
    if (chain != NULL) {
        self->d_chain = NULL;
        for (Py_ssize_t i = 0; i < chain->count; i++) {
            link_clear(&chain->links[chain->head + i]);
        }
        Py_CLEAR(chain->canceller);
        Py_CLEAR(chain->chained_to);
        Py_CLEAR(chain->debug_info);
        Py_CLEAR(chain->list);
        PyMem_Free(chain);
    }
    if (self->d_flags & CDEF_CONTROLLABLE) {
        Py_CLEAR(((ControllableObject *)self)->cd_upstream);
    }
    if (self->d_flags & CDEF_LIST) {
        DeferredListObject *dl = (DeferredListObject *)self;
        Py_CLEAR(dl->dl_deferreds);
        Py_CLEAR(dl->dl_results);
        Py_CLEAR(dl->dl_fire_on_one_callback);
        Py_CLEAR(dl->dl_fire_on_one_errback);
        Py_CLEAR(dl->dl_consume_errors);
        Py_CLEAR(dl->dl_finished);
    }
    return 0;
}

/* "Unhandled error in Deferred:", exactly as Twisted logs it: hand the
 * Failure to a DebugInfo and let its __del__ do the reporting. */
static void
Deferred_finalize(DeferredObject *self)
{
    if (!(self->d_flags & CDEF_UNHANDLED) || self->d_result == NULL) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    self->d_flags &= ~CDEF_UNHANDLED;
    cdef_state *st = cdef_state_from_type(Py_TYPE(self));
    if (st == NULL || !cdef_is_failure(st, self->d_result)) {
        PyErr_Clear();
        goto done;
    }
    PyObject *info = PyObject_CallNoArgs(st->DebugInfo);
    if (info == NULL
        || PyObject_SetAttr(info, st->str_failResult, self->d_result) < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(info);
done:
    PyErr_Restore(type, value, tb);
}

static void
Deferred_dealloc(DeferredObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    /* Our finalizer only reports an unhandled failure: without one, save
     * the resurrection dance (a __del__ given to a subclass still runs). */
    if ((tp->tp_finalize != (destructor)Deferred_finalize
         || (self->d_flags & CDEF_UNHANDLED))
        && PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return; /* resurrected */
    }
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, Deferred_dealloc)
    if (self->d_weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    Deferred_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
    Py_TRASHCAN_END
}

/* ================================================ Python subclasses
 *
 * A class statement gives every Python subclass CPython's generic
 * subtype_dealloc, which finds and runs a base's dealloc after checking for
 * everything the subclass might have added (slots, a dict, weak references,
 * __del__).  cdeferred's own Python classes add none of that -- their
 * instances are exactly the core's -- so they can use the core's dealloc
 * directly, which is a measurable part of creating and dropping a Deferred.
 * Refused, and the class left as it is, unless the layout is the base's. */

static PyObject *
use_core_dealloc(PyObject *module, PyObject *arg)
{
    cdef_state *st = (cdef_state *)PyModule_GetState(module);
    if (!PyType_Check(arg)
        || !PyType_IsSubtype((PyTypeObject *)arg, st->DeferredCoreType)) {
        PyErr_SetString(PyExc_TypeError,
                        "use_core_dealloc() takes a subclass of DeferredCore");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)arg, *base = cls->tp_base;
    int same_layout =
        PyType_HasFeature(cls, Py_TPFLAGS_HEAPTYPE) && base != NULL
        && PyType_IsSubtype(base, st->DeferredCoreType)
        && cls->tp_basicsize == base->tp_basicsize && cls->tp_itemsize == 0
        && cls->tp_dictoffset == base->tp_dictoffset
        && cls->tp_weaklistoffset == base->tp_weaklistoffset
        && cls->tp_del == NULL && cls->tp_finalize == base->tp_finalize
#ifdef Py_TPFLAGS_MANAGED_DICT
        && !PyType_HasFeature(cls, Py_TPFLAGS_MANAGED_DICT)
#endif
#ifdef Py_TPFLAGS_MANAGED_WEAKREF
        && !PyType_HasFeature(cls, Py_TPFLAGS_MANAGED_WEAKREF)
#endif
        ;
    if (same_layout) {
        cls->tp_dealloc = base->tp_dealloc;
    }
    return PyBool_FromLong(same_layout);
}

PyMethodDef cdef_deferred_functions[] = {
    {"use_core_dealloc", use_core_dealloc, METH_O,
     PyDoc_STR("use_core_dealloc(cls)\n--\n\n"
               "Give a Python subclass that adds nothing to the instances the "
               "core's dealloc; return whether it was done.")},
    {NULL, NULL, 0, NULL},
};

/* ============================================================ the spec */

#define FASTCALL_METHOD (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef Deferred_methods[] = {
    {"addCallbacks", (PyCFunction)(void (*)(void))Deferred_addCallbacks,
     FASTCALL_METHOD,
     PyDoc_STR("addCallbacks($self, callback, errback=None, callbackArgs=(), "
               "callbackKeywords={}, errbackArgs=(), errbackKeywords={}, "
               "canceller=None)\n--\n\n"
               "Add a callback/errback pair, and optionally a canceller "
               "called as canceller(d) if d is cancelled before this link "
               "runs.  Returns self.")},
    {"addCallback", (PyCFunction)(void (*)(void))Deferred_addCallback,
     FASTCALL_METHOD,
     PyDoc_STR("addCallback($self, callback, /, *args, **kwargs)\n--\n\n"
               "Add a callback; failures pass through.  Returns self.")},
    {"addErrback", (PyCFunction)(void (*)(void))Deferred_addErrback,
     FASTCALL_METHOD,
     PyDoc_STR("addErrback($self, errback, /, *args, **kwargs)\n--\n\n"
               "Add an errback; results pass through.  Returns self.")},
    {"addBoth", (PyCFunction)(void (*)(void))Deferred_addBoth,
     FASTCALL_METHOD,
     PyDoc_STR("addBoth($self, callback, /, *args, **kwargs)\n--\n\n"
               "Add one callable as both callback and errback.")},
    {"addCanceller", (PyCFunction)(void (*)(void))Deferred_addCanceller,
     FASTCALL_METHOD,
     PyDoc_STR("addCanceller($self, canceller, /, *args, **kwargs)\n--\n\n"
               "Add a link that passes results and failures through and, "
               "if d is cancelled before it runs, calls "
               "canceller(d, *args, **kwargs).  Returns self.")},
    {"callback", (PyCFunction)(void (*)(void))Deferred_callback,
     FASTCALL_METHOD,
     PyDoc_STR("callback($self, result)\n--\n\n"
               "Fire with a result (a Failure goes down the errback side).")},
    {"errback", (PyCFunction)(void (*)(void))Deferred_errback,
     FASTCALL_METHOD,
     PyDoc_STR("errback($self, fail=None)\n--\n\n"
               "Fire with a Failure (wrapping an exception, or the current "
               "one when fail is None).")},
    {"_startRunCallbacks",
     (PyCFunction)(void (*)(void))Deferred_startRunCallbacks, FASTCALL_METHOD,
     PyDoc_STR("_startRunCallbacks($self, result)\n--\n\n")},
    {"pause", (PyCFunction)Deferred_pause, METH_NOARGS,
     PyDoc_STR("pause($self)\n--\n\nStop processing until unpause().")},
    {"unpause", (PyCFunction)(void (*)(void))Deferred_unpause,
     FASTCALL_METHOD,
     PyDoc_STR("unpause($self)\n--\n\nUndo one pause(); run what waited.")},
    {"cancel", (PyCFunction)(void (*)(void))Deferred_cancel, FASTCALL_METHOD,
     PyDoc_STR("cancel($self, msg=None)\n--\n\n"
               "Cancel: pending links' cancellers (last added first), then "
               "the creator's canceller, then errback with "
               "CancelledError(msg) unless one of them fired this Deferred. "
               "If it waits on another Deferred, cancel that one instead.")},
    {"chainDeferred", (PyCFunction)(void (*)(void))Deferred_chainDeferred,
     FASTCALL_METHOD,
     PyDoc_STR("chainDeferred($self, d)\n--\n\n"
               "Make d fire with this Deferred's result.  Returns self.")},
    {"_runCallbacks", (PyCFunction)(void (*)(void))Deferred_runCallbacks,
     FASTCALL_METHOD, PyDoc_STR("_runCallbacks($self)\n--\n\n")},
    {"_continuation", (PyCFunction)(void (*)(void))Deferred_continuation,
     FASTCALL_METHOD, PyDoc_STR("_continuation($self)\n--\n\n")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Deferred_getset[] = {
    {"result", (getter)get_result, (setter)set_result,
     PyDoc_STR("The current result; absent until fired."), NULL},
    {"called", (getter)get_flag, (setter)set_flag, NULL,
     (void *)(uintptr_t)CDEF_CALLED},
    {"paused", (getter)get_paused, (setter)set_paused, NULL, NULL},
    {"_callbacks", (getter)get_callbacks, (setter)set_callbacks,
     PyDoc_STR("The pending links as Twisted's list of tuples (reading it "
               "switches this Deferred to list storage)."), NULL},
    {"_chainedTo", (getter)get_chainedTo, (setter)set_chainedTo, NULL, NULL},
    {"_canceller", (getter)get_canceller, (setter)set_canceller, NULL, NULL},
    {"_suppressAlreadyCalled", (getter)get_flag, (setter)set_flag, NULL,
     (void *)(uintptr_t)CDEF_SUPPRESS},
    {"_runningCallbacks", (getter)get_flag, (setter)set_flag, NULL,
     (void *)(uintptr_t)CDEF_RUNNING},
    {"_debugInfo", (getter)get_debugInfo, (setter)set_debugInfo, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Deferred_members[] = {
    {"__dictoffset__", T_PYSSIZET, offsetof(DeferredObject, d_dict), READONLY,
     NULL},
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(DeferredObject, d_weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Deferred_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR(
                    "DeferredCore(canceller=None)\n--\n\n"
                    "The C core of cdeferred.Deferred; use that class.")},
    {Py_tp_new, cdef_deferred_new},
    {Py_tp_init, Deferred_init},
    {Py_tp_dealloc, Deferred_dealloc},
    {Py_tp_traverse, Deferred_traverse},
    {Py_tp_clear, Deferred_clear},
    {Py_tp_finalize, Deferred_finalize},
    {Py_tp_repr, Deferred_repr},
    {Py_tp_str, Deferred_repr},
    {Py_tp_iter, Deferred_await},
    {Py_am_await, Deferred_await},
    {Py_tp_methods, Deferred_methods},
    {Py_tp_getset, Deferred_getset},
    {Py_tp_members, Deferred_members},
    {0, NULL},
};

PyType_Spec cdef_deferred_spec = {
    .name = "cdeferred._cdeferred.DeferredCore",
    .basicsize = sizeof(DeferredObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Deferred_slots,
};

/* ==================================================== awaiting: the iterator
 *
 * What `await d` / `yield from d` drives: while d has no result (or is
 * paused), yield d itself, so the trampoline (inlineCallbacks,
 * fromCoroutine) can wait on it; then return the result, or raise the
 * Failure's exception into the coroutine. */

static PySendResult
AwaitIter_step(AwaitIterObject *it, PyObject **presult)
{
    DeferredObject *d = (DeferredObject *)it->it_deferred;
    *presult = NULL;
    if (d == NULL) {
        *presult = Py_NewRef(Py_None); /* cleared by the GC: exhausted */
        return PYGEN_RETURN;
    }
    if (!(d->d_flags & CDEF_CALLED) || d->d_paused) {
        *presult = Py_NewRef(d);
        return PYGEN_NEXT;
    }
    cdef_state *st = cdef_state_from_type(Py_TYPE(it));
    if (st == NULL) {
        return PYGEN_ERROR;
    }
    PyObject *result = Py_XNewRef(require_result(d));
    if (result == NULL) {
        return PYGEN_ERROR;
    }
    if (cdef_is_failure(st, result)) {
        /* The awaiting code takes the failure: nothing left to report. */
        if (set_fail_result(st, d, NULL) == 0) {
            PyObject *r = PyObject_CallMethodNoArgs(result,
                                                    st->str_raiseException);
            Py_XDECREF(r);
        }
        Py_DECREF(result);
        return PYGEN_ERROR;
    }
    *presult = result;
    return PYGEN_RETURN;
}

static PyObject *
AwaitIter_next(AwaitIterObject *it)
{
    PyObject *result;
    PySendResult status = AwaitIter_step(it, &result);
    if (status != PYGEN_RETURN) {
        return result; /* yielded, or NULL with the error set */
    }
    /* StopIteration(result), wrapped so a tuple result is not unpacked. */
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
    Py_DECREF(result);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

#if PY_VERSION_HEX >= 0x030A0000
/* `await d` from a coroutine goes through here (PyIter_Send): the result
 * comes back without a StopIteration being made and caught. */
static PySendResult
AwaitIter_am_send(AwaitIterObject *it, PyObject *Py_UNUSED(value),
                  PyObject **presult)
{
    return AwaitIter_step(it, presult);
}
#endif

/* The value sent in is ignored: the Deferred holds the result. */
static PyObject *
AwaitIter_send(AwaitIterObject *it, PyObject *Py_UNUSED(value))
{
    return AwaitIter_next(it);
}

static int
AwaitIter_traverse(AwaitIterObject *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(it));
    Py_VISIT(it->it_deferred);
    return 0;
}

static int
AwaitIter_clear(AwaitIterObject *it)
{
    Py_CLEAR(it->it_deferred);
    return 0;
}

#define AWAIT_FREELIST_SIZE 64

static void
AwaitIter_dealloc(AwaitIterObject *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    PyObject_GC_UnTrack(it);
    AwaitIter_clear(it);
    /* The type cannot be subclassed: its module is the one it names. */
    cdef_state *st = (cdef_state *)PyType_GetModuleState(tp);
    if (st != NULL && st->AwaitIterType == tp
        && st->await_free_count < AWAIT_FREELIST_SIZE) {
        it->it_deferred = st->await_freelist;
        st->await_freelist = (PyObject *)it;
        st->await_free_count++;
    }
    else {
        tp->tp_free((PyObject *)it);
    }
    Py_DECREF(tp);
}

void
cdef_awaititer_free_all(cdef_state *st)
{
    while (st->await_freelist != NULL) {
        AwaitIterObject *it = (AwaitIterObject *)st->await_freelist;
        st->await_freelist = it->it_deferred;
        PyObject_GC_Del(it);
    }
    st->await_free_count = 0;
}

static PyMethodDef AwaitIter_methods[] = {
    {"send", (PyCFunction)AwaitIter_send, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot AwaitIter_slots[] = {
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, AwaitIter_next},
#if PY_VERSION_HEX >= 0x030A0000
    {Py_am_send, AwaitIter_am_send},
#endif
    {Py_tp_methods, AwaitIter_methods},
    {Py_tp_traverse, AwaitIter_traverse},
    {Py_tp_clear, AwaitIter_clear},
    {Py_tp_dealloc, AwaitIter_dealloc},
    {0, NULL},
};

PyType_Spec cdef_awaititer_spec = {
    .name = "cdeferred._cdeferred.DeferredAwaitIterator",
    .basicsize = sizeof(AwaitIterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = AwaitIter_slots,
};
