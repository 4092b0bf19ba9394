/* cdeferred.h -- what the C files of the _cdeferred module share.
 *
 * module.c      module state, multi-phase init, the imports from Twisted
 * deferred.c    DeferredCore: storage, the run loop, cancellation, awaiting
 * controllable.c ControllableCore: the client-owned cut point
 *
 * Cross-file symbols carry the cdef_ prefix; the build uses
 * -fvisibility=hidden so none of them leaks out of the shared object.
 */
#ifndef CDEFERRED_H
#define CDEFERRED_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <structmember.h>

#if PY_VERSION_HEX < 0x03090000
#error "cdeferred needs Python 3.9 or newer"
#endif

/* ------------------------------------------------- version shims
 * Public API that older CPythons lack, written here (no vendored
 * pythoncapi_compat): the C core builds and loads on 3.9 to 3.13. */
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *
Py_NewRef(PyObject *op)
{
    Py_INCREF(op);
    return op;
}
static inline PyObject *
Py_XNewRef(PyObject *op)
{
    Py_XINCREF(op);
    return op;
}
#define Py_NewRef(op) Py_NewRef((PyObject *)(op))
#define Py_XNewRef(op) Py_XNewRef((PyObject *)(op))
#define Py_TPFLAGS_DISALLOW_INSTANTIATION 0
#endif

#if PY_VERSION_HEX < 0x030B0000
/* The exception being handled (sys.exc_info()), as one object. */
static inline PyObject *
PyErr_GetHandledException(void)
{
    PyObject *type, *value, *tb;
    PyErr_GetExcInfo(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}
static inline void
PyErr_SetHandledException(PyObject *exc)
{
    if (exc == NULL || exc == Py_None) {
        PyErr_SetExcInfo(NULL, NULL, NULL);
        return;
    }
    PyErr_SetExcInfo(Py_NewRef(Py_TYPE(exc)), Py_NewRef(exc),
                     PyException_GetTraceback(exc));
}
#endif

#if PY_VERSION_HEX < 0x030A0000
/* gc.disable()/gc.enable(), returning whether it was enabled. */
static inline int
cdef_gc_switch(const char *method)
{
    PyObject *gc = PyImport_ImportModule("gc");
    if (gc == NULL) {
        PyErr_WriteUnraisable(NULL);
        return 0;
    }
    PyObject *was = PyObject_CallMethod(gc, "isenabled", NULL);
    PyObject *r = PyObject_CallMethod(gc, method, NULL);
    Py_DECREF(gc);
    int enabled = was == Py_True;
    Py_XDECREF(was);
    Py_XDECREF(r);
    if (r == NULL) {
        PyErr_WriteUnraisable(NULL);
    }
    return enabled;
}
#define PyGC_Disable() cdef_gc_switch("disable")
#define PyGC_Enable() cdef_gc_switch("enable")
#endif

#if PY_VERSION_HEX < 0x030B0000
/* The module whose PyModuleDef is `def`, among the heap types of tp's MRO. */
static inline PyObject *
PyType_GetModuleByDef(PyTypeObject *tp, PyModuleDef *def)
{
    PyObject *mro = tp->tp_mro;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!PyType_HasFeature(base, Py_TPFLAGS_HEAPTYPE)) {
            continue;
        }
        PyObject *module = ((PyHeapTypeObject *)base)->ht_module;
        if (module != NULL && PyModule_GetDef(module) == def) {
            return module;
        }
    }
    PyErr_Format(PyExc_TypeError, "no cdeferred module found for type '%s'",
                 tp->tp_name);
    return NULL;
}
#endif

#if PY_VERSION_HEX < 0x030A0000
/* Resuming a generator or coroutine (3.10's PyIter_Send), through send(). */
typedef enum {
    PYGEN_RETURN = 0,
    PYGEN_ERROR = -1,
    PYGEN_NEXT = 1,
} PySendResult;

static inline PySendResult
PyIter_Send(PyObject *iter, PyObject *arg, PyObject **presult)
{
    *presult = PyObject_CallMethod(iter, "send", "O", arg);
    if (*presult != NULL) {
        return PYGEN_NEXT;
    }
    if (PyErr_ExceptionMatches(PyExc_StopIteration)
        && _PyGen_FetchStopIterationValue(presult) == 0) {
        return PYGEN_RETURN;
    }
    return PYGEN_ERROR;
}
#endif

/* CDEFERRED_DEBUG=1 builds check the chain invariants (see cdef_chain) after
 * every change of storage or state; release builds compile them away. */
#ifdef CDEF_DEBUG
#define CDEF_ASSERT_CONSISTENT(d) cdef_assert_consistent(d)
#else
#define CDEF_ASSERT_CONSISTENT(d) ((void)0)
#endif

/* ---------------------------------------------------------------- state */

typedef struct {
    PyTypeObject *DeferredCoreType;
    PyTypeObject *ControllableCoreType;
    PyTypeObject *AwaitIterType;
    /* Iterators of `await d` kept for reuse (asyncio's FutureIter does the
     * same): one is made per await, and most awaits end at once. */
    PyObject *await_freelist;     /* linked through it_deferred */
    int await_free_count;
    PyTypeObject *DriverType;
    PyTypeObject *DeferredListCoreType;
    PyTypeObject *PyDeferredType; /* cdeferred._pydeferred.Deferred */

    /* Imports from twisted.internet.defer. */
    PyObject *defer_module;
    PyObject *TwistedDeferred;    /* the class as defer.py defined it */
    PyObject *Failure;            /* twisted.python.failure.Failure */
    /* What failure.c checks before building Failures itself. */
    PyObject *Failure_init;       /* Failure.__init__ as imported */
    PyObject *failure_globals;    /* its module's globals (`count`) */
    PyObject *failure_parents;    /* class -> (version tag, qualified names) */
    PyObject *failure_template;   /* the instance dict's keys, in order */
    PyObject *int_one;
    unsigned int failure_checked_tag; /* Failure's tag when last checked */
    int failure_fast;             /* the outcome of that check */
    PyObject *CancelledError;
    PyObject *AlreadyCalledError;
    PyObject *DebugInfo;
    PyObject *passthru;           /* materialised form of "no callback" */
    PyObject *failthru;           /* materialised form of "no errback" */
    PyObject *CONTINUE;           /* Twisted's _CONTINUE sentinel */
    PyObject *NONE_KWARGS;        /* Twisted's _NONE_KWARGS */
    PyObject *deferred_subclasses; /* the list behind `type(x) in ...` */
    PyObject *NotACoroutineError;
    PyObject *DefGen_Return;      /* what the deprecated returnValue raises */
    PyObject *iscoroutine;        /* asyncio.iscoroutine, as Twisted uses */
    PyObject *FirstError;
    PyObject *defer_log;          /* defer.py's Logger */

    /* Imports from twisted.python and cdeferred's cold-path helpers. */
    PyObject *warnAboutFunction;
    PyObject *logCancellerFailure;
    PyObject *recordCreator;      /* () -> DebugInfo with .creator set */
    PyObject *recordInvoker;      /* (DebugInfo) -> None, sets .invoker */
    PyObject *warnReturnValue;    /* returnValue() called from elsewhere */

    /* Interned attribute names. */
    PyObject *str_debug;
    PyObject *str_result;
    PyObject *str_paused;
    PyObject *str_callbacks;      /* "_callbacks" */
    PyObject *str_chainedTo;
    PyObject *str_debugInfo;
    PyObject *str_failResult;
    PyObject *str_cancel;
    PyObject *str_runCallbacks;
    PyObject *str_getDebugTracebacks;
    PyObject *str_raiseException;
    PyObject *str_captureVars;
    PyObject *str_addBoth;
    PyObject *str_Deferred;
    PyObject *str_cbDeferred;     /* "_cbDeferred" */
    PyObject *str_init;
    PyObject *str_parents;        /* "_parents" */
    PyObject *str_module;
    PyObject *str_name;
    PyObject *str_dot;
    PyObject *str_count;
    PyObject *str_type;
    PyObject *str_tb;
    PyObject *str_class;
    PyObject *str_callback;
    PyObject *str_errback;
    PyObject *str_send;
    PyObject *str_value;
    PyObject *str_throwExceptionIntoGenerator;
    PyObject *kwnames_captureVars; /* ("captureVars",) for vectorcall */

    /* `self.debug` is read on construction and on firing.  Its answer is
     * cached against the type's version tag, which CPython invalidates on
     * any assignment to the class or a base (setDebugging assigns
     * Deferred.debug), so the common case costs two compares. */
    PyTypeObject *debug_cache_type;
    unsigned int debug_cache_tag;
    int debug_cache_value;
} cdef_state;

/* ---------------------------------------------------------------- links */

/* One link of the chain: what addCallbacks appended.  A NULL callback or
 * errback passes the result through (Twisted's passthru/_failthru); NULL
 * args/kwargs mean none.  `canceller` is the third chain: NULL passes the
 * cancellation on; a callable is called as canceller(d); an exact tuple
 * (fn, args, kwargs) is what addCanceller(fn, *args, **kwargs) stored.
 *
 * A continuation (Twisted's `_continuation()`: the waiting Deferred is
 * resumed with this one's result) has callback == errback == CONTINUE and
 * holds the waiting Deferred in `args`. */
typedef struct {
    PyObject *callback;
    PyObject *callback_args;
    PyObject *callback_kwargs;
    PyObject *errback;
    PyObject *errback_args;
    PyObject *errback_kwargs;
    PyObject *canceller;
} cdef_link;

/* Everything a pending Deferred holds besides its result lives in one side
 * block, allocated on first need: a Deferred made and fired without
 * callbacks never allocates it.
 *
 * Invariants:
 *  - links[head .. head+count) are the pending links, in order.
 *  - `list` != NULL means list mode: Python code asked for `_callbacks`, so
 *    the chain was materialised as Twisted's list of tuples, which from then
 *    on is the only storage (count == 0).  Twisted's own _runCallbacks,
 *    inlineCallbacks' cancellation and user code may mutate it freely. */
typedef struct {
    PyObject *canceller;    /* the creator's canceller (Deferred(canceller)) */
    PyObject *chained_to;   /* `_chainedTo` */
    PyObject *debug_info;   /* `_debugInfo`, a twisted DebugInfo, or NULL */
    PyObject *list;         /* list mode storage, see above */
    Py_ssize_t head;
    Py_ssize_t count;
    Py_ssize_t capacity;
    cdef_link links[1];     /* really `capacity` of them */
} cdef_chain;

/* ------------------------------------------------------------- objects */

enum {
    CDEF_CALLED = 1 << 0,            /* `called` */
    CDEF_RUNNING = 1 << 1,           /* `_runningCallbacks` */
    CDEF_SUPPRESS = 1 << 2,          /* `_suppressAlreadyCalled` */
    CDEF_UNHANDLED = 1 << 3,         /* the result is a Failure nobody took:
                                        log it at collection (Twisted's
                                        DebugInfo.failResult) */
    CDEF_CONTROLLABLE = 1 << 4,      /* a ControllableCore instance */
    CDEF_DEACTIVATED = 1 << 5,       /* ControllableDeferred.deactivate() ran */
    CDEF_LIST = 1 << 6,              /* a DeferredListCore instance */
};

typedef struct {
    PyObject_HEAD
    PyObject *d_result;     /* NULL: no result yet (`result` is absent) */
    cdef_chain *d_chain;    /* NULL until a link, canceller, ... is stored */
    PyObject *d_dict;
    PyObject *d_weakreflist;
    int32_t d_paused;
    uint32_t d_flags;
} DeferredObject;

typedef struct {
    DeferredObject base;
    PyObject *cd_upstream;  /* the Deferred we still wait on, or NULL once it
                               delivered or we cut loose from it */
} ControllableObject;

typedef struct {
    DeferredObject base;
    PyObject *dl_deferreds;   /* `_deferredList` */
    PyObject *dl_results;     /* `resultList` */
    /* The options as given: Twisted keeps the objects, not their truth. */
    PyObject *dl_fire_on_one_callback;
    PyObject *dl_fire_on_one_errback;
    PyObject *dl_consume_errors;
    PyObject *dl_finished;    /* `finishedCount`, any number as in Twisted */
} DeferredListObject;

/* ------------------------------------------------------ cross-file API */

#ifdef CDEF_DEBUG
void cdef_assert_consistent(DeferredObject *self);
#endif

extern PyModuleDef cdef_module_def;

/* The module state, from the type of one of our objects.  It is on every
 * hot path, so the usual cases skip PyType_GetModuleByDef's MRO walk: one
 * of the core types, or a class at most two class statements above one
 * (cdeferred.Deferred; install()'s stand-ins) -- their tp_base chain
 * reaches a core type, and every core type belongs to this module. */
static inline cdef_state *
cdef_state_from_type(PyTypeObject *tp)
{
    PyTypeObject *base = tp;
    for (int depth = 0; depth < 3 && base != NULL; depth++) {
        if (PyType_HasFeature(base, Py_TPFLAGS_HEAPTYPE)) {
            PyObject *module = ((PyHeapTypeObject *)base)->ht_module;
            if (module != NULL && PyModule_GetDef(module) == &cdef_module_def) {
                return (cdef_state *)PyModule_GetState(module);
            }
        }
        base = base->tp_base;
    }
    PyObject *mod = PyType_GetModuleByDef(tp, &cdef_module_def);
    return mod == NULL ? NULL : (cdef_state *)PyModule_GetState(mod);
}

static inline int
cdef_is_core(cdef_state *st, PyObject *op)
{
    return PyObject_TypeCheck(op, st->DeferredCoreType);
}

int cdef_is_failure(cdef_state *st, PyObject *op);
int cdef_is_deferred(cdef_state *st, PyObject *op);

/* Each returns 0, or -1 with an exception set. */
PyObject *cdef_deferred_new(PyTypeObject *type, PyObject *args,
                            PyObject *kwargs);
int cdef_init(cdef_state *st, DeferredObject *self, PyObject *canceller);
int cdef_set_chained_to(DeferredObject *self, PyObject *value);
int cdef_fire(cdef_state *st, DeferredObject *self, PyObject *result);
int cdef_errback(cdef_state *st, DeferredObject *self, PyObject *fail);
int cdef_cancel(cdef_state *st, DeferredObject *self, PyObject *msg);
int cdef_cancel_any(cdef_state *st, PyObject *deferred, PyObject *msg);
int cdef_run_link_cancellers(cdef_state *st, DeferredObject *self,
                             PyObject *waiting_on);
int cdef_drop_links(DeferredObject *self);
int cdef_creator_canceller(cdef_state *st, DeferredObject *self);
/* Fast-call arguments into out[nnames] by position or name; the first
 * `required` must be given.  0, or -1 with a TypeError. */
int cdef_parse_args(const char *fname, const char *const *names,
                    Py_ssize_t nnames, Py_ssize_t required,
                    PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                    PyObject **out);
int cdef_follow_begin(cdef_state *st, DeferredObject *self);
int cdef_follow_end(cdef_state *st, DeferredObject *self, PyObject *outcome);
/* Append a link, running it at once if self has its result; steals the
 * link's references. */
int cdef_add_link(cdef_state *st, DeferredObject *self, cdef_link *link);
/* -1 on error, else whether `self.debug` is true. */
int cdef_debug_enabled(cdef_state *st, DeferredObject *self);
PyObject *cdef_take_ready_result(cdef_state *st, PyObject *op);

/* failure.c: Failure(captureVars=...) for the exception raised now (taking
 * it), for the one being handled, and Failure(exc). */
PyObject *cdef_failure_from_error(cdef_state *st, int capture_vars);
PyObject *cdef_failure_from_handled(cdef_state *st, int capture_vars);
PyObject *cdef_failure_from_exception(cdef_state *st, PyObject *exc);

/* driver.c */
PyObject *cdef_from_coroutine(cdef_state *st, PyObject *deferred_class,
                              PyObject *coro);

/* controllable.c */
PyObject *cdef_controllable_take_upstream(DeferredObject *self);
int cdef_controllable_release(cdef_state *st, DeferredObject *self,
                              PyObject *msg);

extern PyType_Spec cdef_deferred_spec;
extern PyType_Spec cdef_controllable_spec;
extern PyType_Spec cdef_awaititer_spec;
void cdef_awaititer_free_all(cdef_state *st);
extern PyType_Spec cdef_driver_spec;
extern PyType_Spec cdef_deferredlist_spec;
extern PyMethodDef cdef_driver_functions[];
extern PyMethodDef cdef_deferred_functions[];

#endif /* CDEFERRED_H */
