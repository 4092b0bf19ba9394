/* failure.c -- the Failures the C core makes.
 *
 * Failure is Twisted's class and stays Twisted's: every Failure here is a
 * twisted.python.failure.Failure.  But an errback chain (a callback raises,
 * an errback traps) spends most of its time in two pieces of Failure's
 * Python: Failure.__init__, and the `parents` property the first trap() or
 * check() reads, which builds reflect.qual(cls) for every class of the
 * exception's MRO.  So the core builds its Failures the way __init__ does --
 * BaseException.__new__ with the call's arguments and an instance dict holding
 * `count`, `type`, `value`, `captureVars` and `tb`, in that order, with the
 * module's failure counter advanced -- and gives each its `_parents` (the
 * lazy property's cache) up front, from a per-class cache of the qualified
 * names.  The attributes and
 * values are the ones __init__ and the property would produce.
 *
 * That holds only while Failure is the class checked here: __init__ the
 * function found at import, `_parents` its lazily filled class default None,
 * attribute assignment the generic one, no property among those names.  That is re-checked whenever
 * Failure's version tag changes (any assignment to the class or a base);
 * a patched Failure, captureVars (debug mode) and a Failure raised as an
 * exception (which __init__ copies) all go through Failure() itself.
 *
 * The parents cache maps a class to the tuple of its MRO's qualified names,
 * computed as reflect.qual does (__module__ + "." + __name__) and checked
 * against the class's version tag, which changes when either is assigned.
 * A class whose names cannot be computed (reflect.qual would raise) gets no
 * `_parents`: the property then computes, and raises, when it is read.  It holds its classes strongly and is emptied when it
 * reaches PARENTS_CACHE_SIZE, so classes made on the fly are not kept
 * forever.
 */
#include "cdeferred.h"

#define PARENTS_CACHE_SIZE 256

/* Whether Failures may be built here rather than by calling Failure. */
static int
fast_path_allowed(cdef_state *st)
{
    PyTypeObject *tp = (PyTypeObject *)st->Failure;
    if (st->failure_checked_tag != 0
        && PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG)
        && tp->tp_version_tag == st->failure_checked_tag) {
        return st->failure_fast;
    }
    int fast = 0;
    PyObject *init = PyObject_GetAttr(st->Failure, st->str_init);
    PyObject *parents = init ? PyObject_GetAttr(st->Failure, st->str_parents)
                             : NULL;
    if (parents != NULL) {
        fast = init == st->Failure_init && parents == Py_None
               && tp->tp_setattro == PyObject_GenericSetAttr;
    }
    else {
        PyErr_Clear(); /* no `_parents`: some other Failure, call it */
    }
    Py_XDECREF(init);
    Py_XDECREF(parents);
    /* __init__'s assignments would go through a data descriptor (a
     * property) of that name; filling the dict would bypass it. */
    PyObject *keys = fast ? PyDict_Keys(st->failure_template) : NULL;
    for (Py_ssize_t i = 0; keys != NULL && fast && i < PyList_GET_SIZE(keys);
         i++) {
        PyObject *attr = PyObject_GetAttr(st->Failure,
                                          PyList_GET_ITEM(keys, i));
        if (attr == NULL) {
            PyErr_Clear();
            continue;
        }
        fast = Py_TYPE(attr)->tp_descr_set == NULL;
        Py_DECREF(attr);
    }
    Py_XDECREF(keys);
    if (PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG)) {
        st->failure_checked_tag = tp->tp_version_tag;
        st->failure_fast = fast;
    }
    return fast;
}

/* reflect.qual(cls): cls.__module__ + "." + cls.__name__. */
static PyObject *
qualified_name(cdef_state *st, PyObject *cls)
{
    PyObject *module = PyObject_GetAttr(cls, st->str_module);
    if (module == NULL) {
        return NULL;
    }
    PyObject *prefix = PyNumber_Add(module, st->str_dot);
    Py_DECREF(module);
    if (prefix == NULL) {
        return NULL;
    }
    PyObject *name = PyObject_GetAttr(cls, st->str_name);
    PyObject *qualified = name ? PyNumber_Add(prefix, name) : NULL;
    Py_XDECREF(name);
    Py_DECREF(prefix);
    return qualified;
}

/* What Failure.parents computes for `type`, as a new list. */
static PyObject *
parents_of(cdef_state *st, PyObject *type)
{
    if (!PyType_Check(type)
        || !PyType_IsSubtype((PyTypeObject *)type,
                             (PyTypeObject *)PyExc_Exception)) {
        PyObject *list = PyList_New(1);
        if (list != NULL) {
            PyList_SET_ITEM(list, 0, Py_NewRef(type));
        }
        return list;
    }
    PyTypeObject *tp = (PyTypeObject *)type;
    int cacheable = PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG);
    if (cacheable) {
        PyObject *entry = PyDict_GetItemWithError(st->failure_parents, type);
        if (entry != NULL
            && PyLong_AsUnsignedLong(PyTuple_GET_ITEM(entry, 0))
                   == tp->tp_version_tag) {
            return PySequence_List(PyTuple_GET_ITEM(entry, 1));
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    /* inspect.getmro(cls) is cls.__mro__. */
    PyObject *mro = tp->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro)) {
        PyErr_SetString(PyExc_TypeError, "exception class without an MRO");
        return NULL;
    }
    mro = Py_NewRef(mro);
    Py_ssize_t n = PyTuple_GET_SIZE(mro);
    PyObject *names = PyTuple_New(n);
    for (Py_ssize_t i = 0; names != NULL && i < n; i++) {
        PyObject *name = qualified_name(st, PyTuple_GET_ITEM(mro, i));
        if (name == NULL) {
            Py_CLEAR(names);
            break;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    Py_DECREF(mro);
    if (names == NULL) {
        return NULL;
    }
    /* Cached only under a valid tag: without one, a later change to the
     * class could not be told from no change. */
    if (cacheable) {
        if (PyDict_GET_SIZE(st->failure_parents) >= PARENTS_CACHE_SIZE) {
            PyDict_Clear(st->failure_parents);
        }
        PyObject *tag = PyLong_FromUnsignedLong(tp->tp_version_tag);
        PyObject *entry = tag ? PyTuple_Pack(2, tag, names) : NULL;
        Py_XDECREF(tag);
        if (entry == NULL
            || PyDict_SetItem(st->failure_parents, type, entry) < 0) {
            Py_XDECREF(entry);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(entry);
    }
    PyObject *list = PySequence_List(names);
    Py_DECREF(names);
    return list;
}

/* Failure.__init__'s `count = count + 1; self.count = count`. */
static PyObject *
next_count(cdef_state *st)
{
    PyObject *count = PyDict_GetItemWithError(st->failure_globals,
                                              st->str_count);
    if (count == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_NameError, "name 'count' is not defined");
        }
        return NULL;
    }
    PyObject *next = PyNumber_Add(count, st->int_one);
    if (next != NULL
        && PyDict_SetItem(st->failure_globals, st->str_count, next) < 0) {
        Py_CLEAR(next);
    }
    return next;
}

/* A Failure for (type, value, tb) as Failure.__init__ makes it.  The
 * instance dict is a copy of a template holding the keys in __init__'s
 * order (plus `_parents`), so filling it replaces values in place instead
 * of growing a dict key by key. */
static PyObject *
build(cdef_state *st, PyObject *args, PyObject *type, PyObject *value,
      PyObject *tb)
{
    PyTypeObject *tp = (PyTypeObject *)st->Failure;
    PyObject *parents = parents_of(st, type);
    if (parents == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear(); /* left to the property, as in Twisted */
        parents = Py_NewRef(Py_None);
    }
    PyObject *count = next_count(st);
    PyObject *dict = count ? PyDict_Copy(st->failure_template) : NULL;
    PyObject *names[] = {st->str_count, st->str_type, st->str_value,
                         st->str_tb, st->str_parents};
    PyObject *values[] = {count, type, value, tb ? tb : Py_None, parents};
    for (size_t i = 0; dict != NULL && i < Py_ARRAY_LENGTH(names); i++) {
        if (PyDict_SetItem(dict, names[i], values[i]) < 0) {
            Py_CLEAR(dict);
        }
    }
    if (dict != NULL && parents == Py_None
        && PyDict_DelItem(dict, st->str_parents) < 0) {
        Py_CLEAR(dict);
    }
    Py_XDECREF(count);
    Py_DECREF(parents);
    PyObject *failure = NULL;
    if (dict != NULL) {
        /* BaseException.__new__ keeps its arguments as `args`. */
        failure = tp->tp_new(tp, args, NULL);
        if (failure != NULL && PyObject_GenericSetDict(failure, dict, NULL) < 0) {
            Py_CLEAR(failure);
        }
        Py_DECREF(dict);
    }
    return failure;
}

/* Failure(captureVars=...) called with `value` as the handled exception
 * (sys.exc_info()), as Twisted calls it inside `except BaseException:`. */
static PyObject *
call_failure_handling(cdef_state *st, PyObject *value, int capture_vars)
{
    PyObject *previous = PyErr_GetHandledException();
    PyErr_SetHandledException(value);
    PyObject *argv[2] = {NULL, capture_vars ? Py_True : Py_False};
    PyObject *failure = PyObject_Vectorcall(
        st->Failure, argv + 1, 0 | PY_VECTORCALL_ARGUMENTS_OFFSET,
        st->kwnames_captureVars);
    PyErr_SetHandledException(previous);
    Py_XDECREF(previous);
    return failure;
}

/* Failure(captureVars=...) for the handled exception `value`. */
static PyObject *
failure_from_exc_info(cdef_state *st, PyObject *value, int capture_vars)
{
    if (!capture_vars && !cdef_is_failure(st, value)) {
        int fast = fast_path_allowed(st);
        if (fast < 0) {
            return NULL;
        }
        if (fast) {
            /* Failure(): no arguments; sys.exc_info() gives type(value) and
             * value.__traceback__. */
            PyObject *no_args = PyTuple_New(0);
            PyObject *tb = PyException_GetTraceback(value);
            PyObject *failure = no_args ? build(st, no_args,
                                                (PyObject *)Py_TYPE(value),
                                                value, tb)
                                        : NULL;
            Py_XDECREF(tb);
            Py_XDECREF(no_args);
            return failure;
        }
    }
    return call_failure_handling(st, value, capture_vars);
}

PyObject *
cdef_failure_from_error(cdef_state *st, int capture_vars)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyObject *failure = failure_from_exc_info(st, value, capture_vars);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return failure;
}

PyObject *
cdef_failure_from_handled(cdef_state *st, int capture_vars)
{
    PyObject *value = PyErr_GetHandledException();
    if (value == NULL || value == Py_None) {
        /* Nothing handled: Failure() raises NoCurrentExceptionError. */
        Py_XDECREF(value);
        return call_failure_handling(st, NULL, capture_vars);
    }
    PyObject *failure = failure_from_exc_info(st, value, capture_vars);
    Py_DECREF(value);
    return failure;
}

PyObject *
cdef_failure_from_exception(cdef_state *st, PyObject *exc)
{
    if (PyExceptionInstance_Check(exc) && !cdef_is_failure(st, exc)) {
        int fast = fast_path_allowed(st);
        if (fast < 0) {
            return NULL;
        }
        if (fast) {
            /* Failure(exc): the type is exc.__class__ for an Exception. */
            int is_exception = PyObject_IsInstance(exc, PyExc_Exception);
            if (is_exception < 0) {
                return NULL;
            }
            PyObject *type = is_exception
                                 ? PyObject_GetAttr(exc, st->str_class)
                                 : Py_NewRef(Py_TYPE(exc));
            if (type == NULL) {
                return NULL;
            }
            PyObject *args = PyTuple_Pack(1, exc);
            PyObject *tb = PyException_GetTraceback(exc);
            PyObject *failure = args ? build(st, args, type, exc, tb) : NULL;
            Py_XDECREF(tb);
            Py_XDECREF(args);
            Py_DECREF(type);
            return failure;
        }
    }
    return PyObject_CallOneArg(st->Failure, exc);
}
