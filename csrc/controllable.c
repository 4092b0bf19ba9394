/* controllable.c -- ControllableCore, the C half of ControllableDeferred.
 *
 * A ControllableDeferred is a cut point owned by the client (DESIGN.md
 * section 3.3).  It follows an optional upstream Deferred through one link
 * on that upstream, and it can stop following it:
 *
 *   fired early     callback()/errback() before upstream delivered
 *   deactivate()    it will never fire
 *   cancel()        its own cancellers, then upstream's
 *
 * In each case the upstream is cancelled, so every layer above frees what it
 * holds, and whatever upstream delivers afterwards is swallowed: the link's
 * function sees cd_upstream == NULL and returns None, which also marks the
 * upstream failure as handled (no "Unhandled error in Deferred").
 *
 * The rules that decide *when* live in deferred.c's cdef_fire and
 * cdef_cancel, behind CDEF_CONTROLLABLE: a controllable Deferred takes the
 * same paths as any other, so there is one firing and one cancelling
 * mechanism, not two.
 */
#include "cdeferred.h"

PyObject *
cdef_controllable_take_upstream(DeferredObject *self)
{
    ControllableObject *cd = (ControllableObject *)self;
    PyObject *upstream = cd->cd_upstream;
    cd->cd_upstream = NULL;
    if (upstream != NULL && self->d_chain != NULL
        && self->d_chain->chained_to == upstream) {
        Py_CLEAR(self->d_chain->chained_to);
    }
    return upstream;
}

/* Stop following upstream and cancel it; a no-op once it delivered. */
int
cdef_controllable_release(cdef_state *st, DeferredObject *self, PyObject *msg)
{
    PyObject *upstream = cdef_controllable_take_upstream(self);
    if (upstream == NULL) {
        return 0;
    }
    int rc = cdef_cancel_any(st, upstream, msg);
    Py_DECREF(upstream);
    return rc;
}

/* The link on upstream: hand its result or failure in, unless we already
 * cut loose.  Returns None either way, so upstream is left with nothing to
 * report. */
static PyObject *
Controllable_deliver(PyObject *self, PyObject *result)
{
    ControllableObject *cd = (ControllableObject *)self;
    if (cd->cd_upstream == NULL) {
        Py_RETURN_NONE;
    }
    cdef_state *st = cdef_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    Py_DECREF(cdef_controllable_take_upstream((DeferredObject *)self));
    if (cdef_fire(st, (DeferredObject *)self, result) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef deliver_def = {
    "_deliver", Controllable_deliver, METH_O,
    PyDoc_STR("Receive the upstream result (internal)."),
};

static PyObject *
Controllable_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *self = cdef_deferred_new(type, args, kwargs);
    if (self != NULL) {
        ((DeferredObject *)self)->d_flags |= CDEF_CONTROLLABLE;
    }
    return self;
}

static int
Controllable_init(ControllableObject *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"upstream", "canceller", NULL};
    PyObject *upstream = NULL, *canceller = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs,
                                     "|OO:ControllableDeferred", names,
                                     &upstream, &canceller)) {
        return -1;
    }
    cdef_state *st = cdef_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return -1;
    }
    if (canceller != NULL && canceller != Py_None
        && !PyCallable_Check(canceller)) {
        PyErr_Format(PyExc_TypeError, "canceller must be callable, not %R",
                     canceller);
        return -1;
    }
    if (upstream == Py_None) {
        upstream = NULL;
    }
    if (upstream != NULL
        && PyObject_IsInstance(upstream, st->TwistedDeferred) != 1) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "upstream must be a Deferred, not %R",
                         upstream);
        }
        return -1;
    }
    if (self->cd_upstream != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "ControllableDeferred already follows an upstream");
        return -1;
    }
    if (cdef_init(st, (DeferredObject *)self, canceller) < 0) {
        return -1;
    }
    if (upstream == NULL) {
        return 0;
    }
    self->cd_upstream = Py_NewRef(upstream);
    if (cdef_set_chained_to((DeferredObject *)self, upstream) < 0) {
        return -1;
    }
    PyObject *deliver = PyCFunction_New(&deliver_def, (PyObject *)self);
    if (deliver == NULL) {
        return -1;
    }
    /* Through the method, so any Deferred works as upstream (and an upstream
     * that already has a result delivers right now). */
    PyObject *r = PyObject_CallMethod(upstream, "addBoth", "O", deliver);
    Py_DECREF(deliver);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static PyObject *
Controllable_deactivate(ControllableObject *self, PyTypeObject *cls,
                        PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames)
{
    if (nargs != 0 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "deactivate() takes no arguments");
        return NULL;
    }
    DeferredObject *d = (DeferredObject *)self;
    if (d->d_flags & (CDEF_CALLED | CDEF_DEACTIVATED)) {
        Py_RETURN_NONE;
    }
    cdef_state *st = (cdef_state *)PyType_GetModuleState(cls);
    d->d_flags |= CDEF_DEACTIVATED;
    /* The result will never come: every layer frees what it holds for it,
     * innermost first, as cancel() would, but nothing fires. */
    if (cdef_run_link_cancellers(st, d, NULL) < 0
        || cdef_creator_canceller(st, d) < 0
        || cdef_controllable_release(st, d, NULL) < 0) {
        return NULL;
    }
    if (cdef_drop_links(d) < 0) {
        return NULL;
    }
    if (d->d_chain != NULL) {
        Py_CLEAR(d->d_chain->canceller);
    }
    CDEF_ASSERT_CONSISTENT(d);
    Py_RETURN_NONE;
}

static PyObject *
Controllable_get_active(ControllableObject *self, void *closure)
{
    uint32_t flags = ((DeferredObject *)self)->d_flags;
    return PyBool_FromLong(!(flags & (CDEF_CALLED | CDEF_DEACTIVATED)));
}

static PyMethodDef Controllable_methods[] = {
    {"deactivate", (PyCFunction)(void (*)(void))Controllable_deactivate,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("deactivate($self)\n--\n\n"
               "Never fire: run this Deferred's pending cancellers and its "
               "creator's canceller, cancel upstream, and swallow whatever "
               "is delivered later.")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Controllable_getset[] = {
    {"active", (getter)Controllable_get_active, NULL,
     PyDoc_STR("True while this Deferred can still fire."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Controllable_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR(
                    "ControllableCore(upstream=None, canceller=None)\n--\n\n"
                    "The C core of cdeferred.ControllableDeferred.")},
    {Py_tp_new, Controllable_new},
    {Py_tp_init, Controllable_init},
    {Py_tp_methods, Controllable_methods},
    {Py_tp_getset, Controllable_getset},
    {0, NULL},
};

PyType_Spec cdef_controllable_spec = {
    .name = "cdeferred._cdeferred.ControllableCore",
    .basicsize = sizeof(ControllableObject),
    /* No HAVE_GC here: PyType_Ready then inherits it together with
     * DeferredCore's traverse and clear, which know about cd_upstream. */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = Controllable_slots,
};
