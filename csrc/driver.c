/* driver.c -- the coroutine driver behind cdeferred's fromCoroutine,
 * ensureDeferred and inlineCallbacks.
 *
 * Twisted drives a coroutine (or an inlineCallbacks generator) with
 * _inlineCallbacks, in Python: send the last result in and look at what
 * comes out.  A Deferred is given a callback; if that callback ran at once
 * (the Deferred had its result) the loop goes on, otherwise the loop returns
 * and the callback resumes it later.  A finished coroutine fires the
 * Deferred handed out at the start.  This file is that loop in C, meant to
 * be indistinguishable from outside (tests/test_driver.py runs both,
 * tests/test_differential_driver.py compares them on random programs):
 *
 *  - every step runs in a copy of the context that was current at the
 *    start, as Twisted's context.run(gen.send, ...);
 *  - a Deferred waited on is left holding None with its Failure handled,
 *    which is what Twisted's callback (returning None) leaves.  One of ours
 *    that has its result and nothing else to run is emptied directly by
 *    cdef_take_ready_result -- the same end state without calling anything;
 *  - the driver itself is the callback added to a Deferred it waits on (it
 *    is callable), so waiting allocates nothing;
 *  - cancelling the Deferred handed out cancels the Deferred being waited
 *    on.  As in Twisted, the cancelled Deferred first starts following a
 *    fresh one, which the coroutine fires when it ends, so a coroutine that
 *    catches CancelledError and returns still delivers its value.
 *
 * Ownership.  The coroutine's frame owns the Deferreds it awaits; a Deferred
 * waited on owns the driver through its callback; the driver owns the
 * coroutine, its context and the Deferred it will fire.  Those are cycles
 * (the coroutine can hold its own Deferred), so the driver is GC-tracked.
 */
#include "cdeferred.h"

typedef struct {
    PyObject_HEAD
    PyObject *dr_coro;        /* the coroutine or generator driven */
    PyObject *dr_context;     /* the contextvars.Context every step runs in */
    PyObject *dr_deferred;    /* fired with the outcome (status.deferred) */
    PyObject *dr_waiting_on;  /* the last Deferred waited on, which cancel()
                                 cancels (Twisted's status.waitingOn, never
                                 cleared there either) */
    PyObject *dr_sync_result; /* what a Deferred delivered inside addBoth */
    int dr_adding;            /* inside addBoth: a delivery is synchronous */
    vectorcallfunc dr_vectorcall;
} DriverObject;

static PyObject *driver_cancel(PyObject *self, PyObject *cancelled);

/* The creator canceller of each Deferred a driver hands out, bound to it. */
static PyMethodDef driver_cancel_def = {
    "cancel_coroutine", driver_cancel, METH_O,
    PyDoc_STR("Cancel what the coroutine waits on (Deferred canceller).")};

/* Twisted's test: iscoroutine(x) or inspect.isgenerator(x). */
static int
is_coroutine_like(cdef_state *st, PyObject *op)
{
    if (PyCoro_CheckExact(op) || PyGen_Check(op)) {
        return 1;
    }
    PyObject *answer = PyObject_CallOneArg(st->iscoroutine, op);
    if (answer == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(answer);
    Py_DECREF(answer);
    return truth;
}

/* deferred_class(canceller=this driver's cancel_coroutine). */
static PyObject *
new_deferred(cdef_state *st, DriverObject *dr, PyObject *deferred_class)
{
    PyObject *canceller = PyCFunction_New(&driver_cancel_def, (PyObject *)dr);
    if (canceller == NULL) {
        return NULL;
    }
    PyObject *d = PyObject_CallOneArg(deferred_class, canceller);
    Py_DECREF(canceller);
    if (d != NULL && !cdef_is_core(st, d)) {
        PyErr_Format(PyExc_TypeError,
                     "the coroutine driver needs a cdeferred Deferred, "
                     "not %.200s", Py_TYPE(d)->tp_name);
        Py_CLEAR(d);
    }
    return d;
}

/* One step: send `result` in, or throw it in if it is a Failure (through
 * Failure.throwExceptionIntoGenerator, as Twisted does), inside the
 * coroutine's context. */
static PySendResult
resume_coroutine(cdef_state *st, DriverObject *dr, PyObject *result,
                 int thrown, PyObject **out)
{
    *out = NULL;
    if (PyContext_Enter(dr->dr_context) < 0) {
        return PYGEN_ERROR;
    }
    PySendResult status;
    if (thrown) {
        *out = PyObject_CallMethodOneArg(
            result, st->str_throwExceptionIntoGenerator, dr->dr_coro);
        status = *out != NULL ? PYGEN_NEXT : PYGEN_ERROR;
    }
    else if (PyCoro_CheckExact(dr->dr_coro) || PyGen_CheckExact(dr->dr_coro)) {
        status = PyIter_Send(dr->dr_coro, result, out);
    }
    else {
        /* Another Coroutine implementation: its send(), as Twisted calls. */
        *out = PyObject_CallMethodOneArg(dr->dr_coro, st->str_send, result);
        status = *out != NULL ? PYGEN_NEXT : PYGEN_ERROR;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyContext_Exit(dr->dr_context) < 0) {
        /* The coroutine left a context entered: that error wins. */
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        Py_CLEAR(*out);
        return PYGEN_ERROR;
    }
    PyErr_Restore(type, value, tb);
    return status;
}

/* dr_deferred.callback(value) or .errback(value); steals `value`. */
static int
fire(cdef_state *st, DriverObject *dr, PyObject *method, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    PyObject *d = Py_NewRef(dr->dr_deferred);
    PyObject *r = PyObject_CallMethodOneArg(d, method, value);
    Py_DECREF(d);
    Py_DECREF(value);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The coroutine raised: StopIteration or the deprecated returnValue() end
 * it with a value, anything else (BaseException included) becomes the
 * Failure it ends with.  `thrown`: the step went through
 * throwExceptionIntoGenerator, whose frame heads the traceback. */
static int
finish_with_error(cdef_state *st, DriverObject *dr, int thrown)
{
    int stopped = PyErr_ExceptionMatches(PyExc_StopIteration);
    if (!stopped && !PyErr_ExceptionMatches(st->DefGen_Return)) {
        int debug = cdef_debug_enabled(st, (DeferredObject *)dr->dr_deferred);
        if (debug < 0) {
            return -1;
        }
        return fire(st, dr, st->str_errback,
                    cdef_failure_from_error(st, debug));
    }
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    PyObject *value = PyObject_GetAttr(exc, st->str_value);
    if (value == NULL && stopped
        && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear(); /* Twisted: getattr(e, "value", None) */
        value = Py_NewRef(Py_None);
    }
    if (value != NULL && !stopped) {
        /* returnValue() called below a function it does not exit warns. */
        PyObject *r = PyObject_CallFunction(st->warnReturnValue, "OO",
                                            tb ? tb : Py_None,
                                            thrown ? Py_True : Py_False);
        Py_XDECREF(r);
        if (r == NULL) {
            Py_CLEAR(value);
        }
    }
    Py_XDECREF(type);
    Py_XDECREF(exc);
    Py_XDECREF(tb);
    return fire(st, dr, st->str_callback, value);
}

/* Twisted's _inlineCallbacks: run the coroutine from `result` until it
 * waits on a Deferred that has no result yet, or ends.  -1 with an
 * exception for what Twisted's loop lets propagate. */
static int
drive(cdef_state *st, DriverObject *dr, PyObject *result)
{
    Py_INCREF(result);
    for (;;) {
        PyObject *yielded;
        int thrown = cdef_is_failure(st, result);
        PySendResult status = resume_coroutine(st, dr, result, thrown,
                                               &yielded);
        Py_DECREF(result);
        if (status == PYGEN_RETURN) {
            return fire(st, dr, st->str_callback, yielded);
        }
        if (status == PYGEN_ERROR) {
            return finish_with_error(st, dr, thrown);
        }
        if (!cdef_is_deferred(st, yielded)) {
            int nested = is_coroutine_like(st, yielded);
            if (nested <= 0) {
                if (nested < 0) {
                    Py_DECREF(yielded);
                    return -1;
                }
                result = yielded; /* a plain value goes straight back in */
                continue;
            }
            PyObject *inner = cdef_from_coroutine(
                st, (PyObject *)Py_TYPE(dr->dr_deferred), yielded);
            Py_DECREF(yielded);
            if (inner == NULL) {
                return -1;
            }
            yielded = inner;
        }
        result = cdef_take_ready_result(st, yielded);
        if (result == NULL && PyErr_Occurred()) {
            Py_DECREF(yielded);
            return -1;
        }
        if (result == NULL) {
            dr->dr_adding = 1;
            PyObject *r = PyObject_CallMethodOneArg(yielded, st->str_addBoth,
                                                    (PyObject *)dr);
            dr->dr_adding = 0;
            result = dr->dr_sync_result;
            dr->dr_sync_result = NULL;
            if (r == NULL) {
                Py_XDECREF(result);
                Py_DECREF(yielded);
                return -1;
            }
            Py_DECREF(r);
            if (result == NULL) {
                /* Resumed by the callback when `yielded` fires. */
                Py_XSETREF(dr->dr_waiting_on, yielded);
                return 0;
            }
        }
        Py_DECREF(yielded);
    }
}

/* The callback on a Deferred waited on: resume the coroutine. */
static PyObject *
driver_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                  PyObject *kwnames)
{
    DriverObject *dr = (DriverObject *)self;
    if (PyVectorcall_NARGS(nargsf) != 1
        || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "a coroutine driver takes exactly one argument, the "
                        "result of the Deferred it waits on");
        return NULL;
    }
    if (dr->dr_coro == NULL || dr->dr_context == NULL
        || dr->dr_deferred == NULL) {
        /* Cleared by the garbage collector along with its coroutine: a
         * Deferred of the same dead cycle fired it.  Nothing to resume. */
        Py_RETURN_NONE;
    }
    if (dr->dr_adding) {
        /* Fired inside addBoth: the loop in drive() takes it from here. */
        dr->dr_adding = 0;
        Py_XSETREF(dr->dr_sync_result, Py_NewRef(args[0]));
        Py_RETURN_NONE;
    }
    cdef_state *st = cdef_state_from_type(Py_TYPE(dr));
    if (st == NULL || drive(st, dr, args[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The creator canceller: make a fresh Deferred the coroutine will fire,
 * cancel what the coroutine waits on (which raises CancelledError at its
 * await, unless that Deferred suppresses it), then have the cancelled
 * Deferred follow the fresh one -- or, if cancelling raised, fail with that. */
static PyObject *
driver_cancel(PyObject *self, PyObject *cancelled)
{
    DriverObject *dr = (DriverObject *)self;
    cdef_state *st = cdef_state_from_type(Py_TYPE(dr));
    if (st == NULL) {
        return NULL;
    }
    if (dr->dr_deferred == NULL) {
        Py_RETURN_NONE; /* cleared by the garbage collector, as above */
    }
    if (!cdef_is_core(st, cancelled)) {
        PyErr_Format(PyExc_TypeError,
                     "cancel_coroutine() expects the cdeferred Deferred it "
                     "was created for, not %.200s", Py_TYPE(cancelled)->tp_name);
        return NULL;
    }
    DeferredObject *d = (DeferredObject *)cancelled;
    PyObject *fresh = new_deferred(st, dr, (PyObject *)Py_TYPE(cancelled));
    if (fresh == NULL) {
        return NULL;
    }
    Py_XSETREF(dr->dr_deferred, Py_NewRef(fresh));
    /* Twisted cancels from an errback on `cancelled`: it is called and
     * running meanwhile (a nested cancel() does nothing, callbacks added wait),
     * then follows `fresh` -- or fails with what cancelling raised. */
    if (cdef_follow_begin(st, d) < 0) {
        Py_DECREF(fresh);
        return NULL;
    }
    PyObject *outcome = Py_NewRef(fresh);
    PyObject *awaited = Py_XNewRef(dr->dr_waiting_on);
    if (awaited != NULL) {
        int rc = cdef_cancel_any(st, awaited, NULL);
        Py_DECREF(awaited);
        if (rc < 0) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            int debug = cdef_debug_enabled(st, d);
            PyErr_Restore(type, value, tb);
            Py_SETREF(outcome, debug < 0 ? NULL
                                         : cdef_failure_from_error(st, debug));
        }
    }
    int rc;
    if (outcome != NULL) {
        rc = cdef_follow_end(st, d, outcome);
        Py_DECREF(outcome);
    }
    else {
        /* No Failure could be made: leave `cancelled` consistent, report. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        (void)cdef_follow_end(st, d, Py_None);
        PyErr_Clear();
        PyErr_Restore(type, value, tb);
        rc = -1;
    }
    Py_DECREF(fresh);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
cdef_from_coroutine(cdef_state *st, PyObject *deferred_class, PyObject *coro)
{
    DriverObject *dr = PyObject_GC_New(DriverObject, st->DriverType);
    if (dr == NULL) {
        return NULL;
    }
    dr->dr_coro = Py_NewRef(coro);
    dr->dr_context = NULL;
    dr->dr_deferred = NULL;
    dr->dr_waiting_on = NULL;
    dr->dr_sync_result = NULL;
    dr->dr_adding = 0;
    dr->dr_vectorcall = driver_vectorcall;
    PyObject_GC_Track(dr);

    PyObject *d = NULL;
    dr->dr_context = PyContext_CopyCurrent();
    if (dr->dr_context != NULL) {
        d = new_deferred(st, dr, deferred_class);
    }
    if (d != NULL) {
        dr->dr_deferred = Py_NewRef(d);
        if (drive(st, dr, Py_None) < 0) {
            Py_CLEAR(d);
        }
    }
    Py_DECREF(dr);
    return d;
}

/* Twisted's driver makes `twisted.internet.defer.Deferred`: after install()
 * that is a subclass of ours, which then is made here too. */
static PyObject *
class_to_make(cdef_state *st, PyObject *fallback)
{
    PyObject *current = PyObject_GetAttr(st->defer_module, st->str_Deferred);
    if (current == NULL) {
        return NULL;
    }
    if (PyType_Check(current)
        && PyType_IsSubtype((PyTypeObject *)current, st->DeferredCoreType)) {
        return current;
    }
    Py_DECREF(current);
    return Py_NewRef(fallback);
}

/* from_coroutine(deferred_class, coro): Deferred.fromCoroutine. */
static PyObject *
module_from_coroutine(PyObject *module, PyObject *const *args,
                      Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "from_coroutine() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    cdef_state *st = (cdef_state *)PyModule_GetState(module);
    PyObject *coro = args[1];
    if (!PyType_Check(args[0])
        || !PyType_IsSubtype((PyTypeObject *)args[0], st->DeferredCoreType)) {
        PyErr_SetString(PyExc_TypeError,
                        "from_coroutine() needs a cdeferred Deferred class");
        return NULL;
    }
    int ok = is_coroutine_like(st, coro);
    if (ok <= 0) {
        if (ok == 0) {
            PyErr_Format(st->NotACoroutineError, "%R is not a coroutine",
                         coro);
        }
        return NULL;
    }
    PyObject *deferred_class = class_to_make(st, args[0]);
    if (deferred_class == NULL) {
        return NULL;
    }
    PyObject *d = cdef_from_coroutine(st, deferred_class, coro);
    Py_DECREF(deferred_class);
    return d;
}

PyMethodDef cdef_driver_functions[] = {
    {"from_coroutine", (PyCFunction)(void (*)(void))module_from_coroutine,
     METH_FASTCALL,
     PyDoc_STR("from_coroutine(deferred_class, coro)\n--\n\n"
               "Drive a coroutine or generator that awaits or yields "
               "Deferreds; return a Deferred fired with its outcome "
               "(Twisted's fromCoroutine, in C).  The Deferred is a "
               "deferred_class, or twisted.internet.defer.Deferred when "
               "install() made that a cdeferred class.")},
    {NULL, NULL, 0, NULL},
};

static PyObject *
driver_repr(DriverObject *dr)
{
    return PyUnicode_FromFormat("<cdeferred coroutine driver of %R>",
                                dr->dr_coro ? dr->dr_coro : Py_None);
}

static int
driver_traverse(DriverObject *dr, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(dr));
    Py_VISIT(dr->dr_coro);
    Py_VISIT(dr->dr_context);
    Py_VISIT(dr->dr_deferred);
    Py_VISIT(dr->dr_waiting_on);
    Py_VISIT(dr->dr_sync_result);
    return 0;
}

static int
driver_clear(DriverObject *dr)
{
    Py_CLEAR(dr->dr_coro);
    Py_CLEAR(dr->dr_context);
    Py_CLEAR(dr->dr_deferred);
    Py_CLEAR(dr->dr_waiting_on);
    Py_CLEAR(dr->dr_sync_result);
    return 0;
}

static void
driver_dealloc(DriverObject *dr)
{
    PyTypeObject *tp = Py_TYPE(dr);
    PyObject_GC_UnTrack(dr);
    driver_clear(dr);
    tp->tp_free((PyObject *)dr);
    Py_DECREF(tp);
}

static PyMemberDef driver_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(DriverObject, dr_vectorcall),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot driver_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR(
                    "Drives one coroutine; called with the result of the "
                    "Deferred it waits on.")},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_repr, driver_repr},
    {Py_tp_members, driver_members},
    {Py_tp_traverse, driver_traverse},
    {Py_tp_clear, driver_clear},
    {Py_tp_dealloc, driver_dealloc},
    {0, NULL},
};

PyType_Spec cdef_driver_spec = {
    .name = "cdeferred._cdeferred.CoroutineDriver",
    .basicsize = sizeof(DriverObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = driver_slots,
};
