/* deferredlist.c -- DeferredListCore, the C half of cdeferred.DeferredList
 * (and so of cdeferred.gatherResults, and of defer.DeferredList once
 * install() ran).
 *
 * Twisted's DeferredList gives every Deferred in it a callback/errback pair:
 * its bound method _cbDeferred with the arguments (index, SUCCESS) or
 * (index, FAILURE), which files the result in `resultList`, counts it in
 * `finishedCount` and fires the list when the options say so.  Here the same
 * pair goes on each Deferred, but _cbDeferred is C, one bound method serves
 * every link, the links go straight into our Deferreds' chains (through
 * addCallbacks for any other Deferred), and the bookkeeping lives in C fields
 * under Twisted's attribute names, so code that reads or sets them still
 * works.  Storage and GC of those fields are DeferredCore's, behind CDEF_LIST,
 * as ControllableCore's are behind CDEF_CONTROLLABLE.
 */
#include "cdeferred.h"

static PyObject *
DeferredList_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *self = cdef_deferred_new(type, args, kwargs);
    if (self != NULL) {
        ((DeferredObject *)self)->d_flags |= CDEF_LIST;
    }
    return self;
}

/* deferred.addCallbacks(collect, collect, callbackArgs=(index, True),
 * errbackArgs=(index, False)), as Twisted's __init__ adds it. */
static int
add_collector(cdef_state *st, PyObject *deferred, PyObject *collect,
              Py_ssize_t index)
{
    PyObject *position = PyLong_FromSsize_t(index);
    if (position == NULL) {
        return -1;
    }
    PyObject *on_success = PyTuple_Pack(2, position, Py_True);
    PyObject *on_failure = PyTuple_Pack(2, position, Py_False);
    Py_DECREF(position);
    if (on_success == NULL || on_failure == NULL) {
        Py_XDECREF(on_success);
        Py_XDECREF(on_failure);
        return -1;
    }
    if (cdef_is_core(st, deferred)) {
        cdef_link link = {
            .callback = Py_NewRef(collect),
            .callback_args = on_success,
            .errback = Py_NewRef(collect),
            .errback_args = on_failure,
        };
        return cdef_add_link(st, (DeferredObject *)deferred, &link);
    }
    PyObject *r = PyObject_CallMethod(deferred, "addCallbacks", "OOOOOO",
                                      collect, collect, on_success, Py_None,
                                      on_failure, Py_None);
    Py_DECREF(on_success);
    Py_DECREF(on_failure);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* self.callback(value) / self.errback(value): through the methods, as
 * Twisted's DeferredList fires itself, so a subclass's override sees it. */
static int
fire_through(PyObject *self, PyObject *method, PyObject *value)
{
    PyObject *r = value ? PyObject_CallMethodOneArg(self, method, value) : NULL;
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int
DeferredList_init(DeferredListObject *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"deferredList", "fireOnOneCallback",
                            "fireOnOneErrback", "consumeErrors", NULL};
    PyObject *iterable;
    PyObject *fire_on_one_callback = Py_False, *fire_on_one_errback = Py_False;
    PyObject *consume_errors = Py_False;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOO:DeferredList", names,
                                     &iterable, &fire_on_one_callback,
                                     &fire_on_one_errback, &consume_errors)) {
        return -1;
    }
    cdef_state *st = cdef_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return -1;
    }
    PyObject *deferreds = PySequence_List(iterable);
    if (deferreds == NULL) {
        return -1;
    }
    Py_ssize_t count = PyList_GET_SIZE(deferreds);
    PyObject *results = PyList_New(count);
    if (results == NULL) {
        Py_DECREF(deferreds);
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyList_SET_ITEM(results, i, Py_NewRef(Py_None));
    }
    Py_XSETREF(self->dl_deferreds, deferreds);
    Py_XSETREF(self->dl_results, results);
    if (cdef_init(st, (DeferredObject *)self, NULL) < 0) {
        return -1;
    }
    int fire_at_once = count == 0;
    if (fire_at_once) {
        int truth = PyObject_IsTrue(fire_on_one_callback);
        if (truth < 0) {
            return -1;
        }
        fire_at_once = !truth;
    }
    if (fire_at_once) {
        PyObject *empty = PyList_New(0);
        int rc = fire_through((PyObject *)self, st->str_callback, empty);
        Py_XDECREF(empty);
        if (rc < 0) {
            return -1;
        }
    }
    /* Set before any link is added: the links run at once for Deferreds
     * that already fired, and read these. */
    Py_XSETREF(self->dl_fire_on_one_callback, Py_NewRef(fire_on_one_callback));
    Py_XSETREF(self->dl_fire_on_one_errback, Py_NewRef(fire_on_one_errback));
    Py_XSETREF(self->dl_consume_errors, Py_NewRef(consume_errors));
    Py_XSETREF(self->dl_finished, PyLong_FromLong(0));
    if (self->dl_finished == NULL) {
        return -1;
    }

    /* self._cbDeferred, looked up as Twisted does, so an override counts. */
    PyObject *collect = PyObject_GetAttr((PyObject *)self, st->str_cbDeferred);
    if (collect == NULL) {
        return -1;
    }
    int rc = 0;
    Py_INCREF(deferreds); /* a link's code may replace _deferredList */
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(deferreds); i++) {
        PyObject *deferred = Py_NewRef(PyList_GET_ITEM(deferreds, i));
        rc = add_collector(st, deferred, collect, i);
        Py_DECREF(deferred);
    }
    Py_DECREF(deferreds);
    Py_DECREF(collect);
    return rc;
}

/* A truth test of one of the options; NULL (deleted) reads as false. */
static int
option(PyObject *value)
{
    return value == NULL ? 0 : PyObject_IsTrue(value);
}

/* Fire the list if this result makes it due: on the first success or
 * failure when the options ask for it, or when every Deferred delivered. */
static int
fire_when_due(cdef_state *st, DeferredListObject *self, PyObject *result,
              PyObject *index, int succeeded, int failed)
{
    if (succeeded || failed) {
        int fire_on_one = option(succeeded ? self->dl_fire_on_one_callback
                                           : self->dl_fire_on_one_errback);
        if (fire_on_one < 0) {
            return -1;
        }
        if (fire_on_one && succeeded) {
            PyObject *pair = PyTuple_Pack(2, result, index);
            int rc = fire_through((PyObject *)self, st->str_callback, pair);
            Py_XDECREF(pair);
            return rc;
        }
        if (fire_on_one) {
            PyObject *error = PyObject_CallFunctionObjArgs(
                st->FirstError, result, index, NULL);
            PyObject *failure = error ? cdef_failure_from_exception(st, error)
                                      : NULL;
            Py_XDECREF(error);
            int rc = fire_through((PyObject *)self, st->str_errback, failure);
            Py_XDECREF(failure);
            return rc;
        }
    }
    if (self->dl_results == NULL || self->dl_finished == NULL) {
        /* Deleted by Python code run while filing the result. */
        PyErr_SetString(PyExc_AttributeError,
                        self->dl_results ? "finishedCount" : "resultList");
        return -1;
    }
    PyObject *results = Py_NewRef(self->dl_results);
    Py_ssize_t size = PyObject_Size(results);
    PyObject *len = size < 0 ? NULL : PyLong_FromSsize_t(size);
    int due = len ? PyObject_RichCompareBool(self->dl_finished, len, Py_EQ)
                  : -1;
    Py_XDECREF(len);
    int rc = due;
    if (due > 0) {
        rc = fire_through((PyObject *)self, st->str_callback, results);
    }
    Py_DECREF(results);
    return rc < 0 ? -1 : 0;
}

/* _cbDeferred(result, index, succeeded): file the result, fire when due,
 * and hand the result on (None for a consumed failure). */
static PyObject *
DeferredList_cbDeferred(DeferredListObject *self, PyTypeObject *cls,
                        PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames)
{
    static const char *const names[] = {"result", "index", "succeeded"};
    PyObject *given[3];
    if (cdef_parse_args("_cbDeferred", names, 3, 3, args, nargs, kwnames,
                        given) < 0) {
        return NULL;
    }
    cdef_state *st = PyType_GetModuleState(cls);
    PyObject *result = given[0], *index = given[1];
    /* Twisted compares with SUCCESS (True) and FAILURE (False). */
    int succeeded = PyObject_RichCompareBool(given[2], Py_True, Py_EQ);
    int failed = succeeded ? 0
                           : PyObject_RichCompareBool(given[2], Py_False, Py_EQ);
    if (succeeded < 0 || failed < 0) {
        return NULL;
    }
    if (self->dl_results == NULL) {
        PyErr_SetString(PyExc_AttributeError, "resultList");
        return NULL;
    }
    PyObject *entry = PyTuple_Pack(2, given[2], result);
    if (entry == NULL) {
        return NULL;
    }
    PyObject *results = Py_NewRef(self->dl_results);
    int rc = PyObject_SetItem(results, index, entry);
    Py_DECREF(results);
    Py_DECREF(entry);
    if (rc < 0) {
        return NULL;
    }
    if (self->dl_finished == NULL) {
        PyErr_SetString(PyExc_AttributeError, "finishedCount");
        return NULL;
    }
    PyObject *count = PyNumber_Add(self->dl_finished, st->int_one);
    if (count == NULL) {
        return NULL;
    }
    Py_XSETREF(self->dl_finished, count);
    if (!(((DeferredObject *)self)->d_flags & CDEF_CALLED)
        && fire_when_due(st, self, result, index, succeeded, failed) < 0) {
        return NULL;
    }
    if (failed) {
        int consume = option(self->dl_consume_errors);
        if (consume < 0) {
            return NULL;
        }
        if (consume) {
            Py_RETURN_NONE;
        }
    }
    return Py_NewRef(result);
}

/* cancel(): cancel every Deferred in the list (the list fires as they do);
 * one whose cancellation raises is logged, as Twisted logs it. */
static PyObject *
DeferredList_cancel(DeferredListObject *self, PyTypeObject *cls,
                    PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"msg"};
    PyObject *msg;
    if (cdef_parse_args("cancel", names, 1, 0, args, nargs, kwnames, &msg) < 0) {
        return NULL;
    }
    cdef_state *st = PyType_GetModuleState(cls);
    if ((((DeferredObject *)self)->d_flags & CDEF_CALLED)
        || self->dl_deferreds == NULL) {
        Py_RETURN_NONE;
    }
    /* Iterated live, as Twisted's `for deferred in self._deferredList`. */
    PyObject *members = PyObject_GetIter(self->dl_deferreds);
    if (members == NULL) {
        return NULL;
    }
    PyObject *deferred;
    while ((deferred = PyIter_Next(members)) != NULL) {
        int rc = cdef_cancel_any(st, deferred, msg);
        Py_DECREF(deferred);
        if (rc == 0) {
            continue;
        }
        PyObject *failure = cdef_failure_from_error(st, 0);
        PyObject *r = failure == NULL ? NULL
            : PyObject_CallMethod(st->defer_log, "failure", "sO",
                                  "Exception raised from user supplied "
                                  "canceller", failure);
        Py_XDECREF(failure);
        if (r == NULL) {
            Py_DECREF(members);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(members);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

#define FASTCALL_METHOD (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef DeferredList_methods[] = {
    {"_cbDeferred", (PyCFunction)(void (*)(void))DeferredList_cbDeferred,
     FASTCALL_METHOD,
     PyDoc_STR("_cbDeferred($self, result, index, succeeded)\n--\n\n"
               "The callback and errback on each Deferred of the list.")},
    {"cancel", (PyCFunction)(void (*)(void))DeferredList_cancel,
     FASTCALL_METHOD,
     PyDoc_STR("cancel($self, msg=None)\n--\n\n"
               "Cancel every Deferred in the list, unless it fired.")},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef DeferredList_members[] = {
    {"_deferredList", T_OBJECT, offsetof(DeferredListObject, dl_deferreds), 0,
     NULL},
    {"resultList", T_OBJECT, offsetof(DeferredListObject, dl_results), 0,
     PyDoc_STR("(succeeded, result) per Deferred, None until it fires.")},
    {"fireOnOneCallback", T_OBJECT,
     offsetof(DeferredListObject, dl_fire_on_one_callback), 0, NULL},
    {"fireOnOneErrback", T_OBJECT,
     offsetof(DeferredListObject, dl_fire_on_one_errback), 0, NULL},
    {"consumeErrors", T_OBJECT, offsetof(DeferredListObject, dl_consume_errors),
     0, NULL},
    {"finishedCount", T_OBJECT_EX, offsetof(DeferredListObject, dl_finished),
     0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot DeferredList_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR(
                    "DeferredListCore(deferredList, fireOnOneCallback=False, "
                    "fireOnOneErrback=False, consumeErrors=False)\n--\n\n"
                    "The C core of cdeferred.DeferredList.")},
    {Py_tp_new, DeferredList_new},
    {Py_tp_init, DeferredList_init},
    {Py_tp_methods, DeferredList_methods},
    {Py_tp_members, DeferredList_members},
    {0, NULL},
};

PyType_Spec cdef_deferredlist_spec = {
    .name = "cdeferred._cdeferred.DeferredListCore",
    .basicsize = sizeof(DeferredListObject),
    /* No HAVE_GC here: PyType_Ready then inherits it together with
     * DeferredCore's traverse and clear, which know the fields (CDEF_LIST). */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = DeferredList_slots,
};
