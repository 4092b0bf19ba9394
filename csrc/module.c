/* module.c -- the _cdeferred module: state, types, imports (PEP 489).
 *
 * Everything the C code needs from Twisted is imported once, at exec time,
 * into the module state, so the hot paths never look a name up.  Importing
 * twisted.internet.defer here is what makes `import cdeferred` import
 * Twisted's Deferred, which cdeferred.Deferred subclasses anyway.
 */
#include "cdeferred.h"

static cdef_state *
get_state(PyObject *module)
{
    return (cdef_state *)PyModule_GetState(module);
}

/* The list of fields, once, for traverse/clear/exec to share. */
#define CDEF_STATE_OBJECTS(X)                                                 \
    X(DeferredCoreType) X(ControllableCoreType) X(AwaitIterType) X(DriverType) X(DeferredListCoreType) \
    X(PyDeferredType)                                                         \
    X(defer_module) X(TwistedDeferred) X(Failure)                             \
    X(Failure_init) X(failure_globals) X(failure_parents) X(failure_template) \
    X(int_one)           \
    X(CancelledError) X(AlreadyCalledError)       \
    X(DebugInfo) X(passthru) X(failthru) X(CONTINUE) X(NONE_KWARGS)           \
    X(deferred_subclasses) X(NotACoroutineError) X(DefGen_Return)          \
    X(iscoroutine) X(FirstError) X(defer_log) X(warnReturnValue) X(warnAboutFunction) X(logCancellerFailure)        \
    X(recordCreator) X(recordInvoker) X(str_debug) X(str_result)              \
    X(str_paused) X(str_callbacks) X(str_chainedTo) X(str_debugInfo)          \
    X(str_failResult) X(str_cancel) X(str_runCallbacks)                       \
    X(str_getDebugTracebacks) X(str_raiseException) X(str_captureVars)        \
    X(kwnames_captureVars) X(str_addBoth) X(str_Deferred) X(str_cbDeferred) X(str_init) X(str_parents) X(str_module) \
    X(str_name) X(str_dot) X(str_count) X(str_type) X(str_tb) X(str_class) X(str_callback) X(str_errback)     \
    X(str_send) X(str_value) X(str_throwExceptionIntoGenerator)

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    cdef_state *st = get_state(module);
#define VISIT(name) Py_VISIT(st->name);
    CDEF_STATE_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
module_clear(PyObject *module)
{
    cdef_state *st = get_state(module);
#define CLEAR(name) Py_CLEAR(st->name);
    CDEF_STATE_OBJECTS(CLEAR)
#undef CLEAR
    st->debug_cache_type = NULL;
    st->failure_checked_tag = 0;
    cdef_awaititer_free_all(st);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyObject *
import_attr(const char *module_name, const char *attr)
{
    PyObject *module = PyImport_ImportModule(module_name);
    if (module == NULL) {
        return NULL;
    }
    PyObject *value = PyObject_GetAttrString(module, attr);
    Py_DECREF(module);
    return value;
}

static int
intern(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

static int
module_exec(PyObject *module)
{
    cdef_state *st = get_state(module);

    st->DeferredCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &cdef_deferred_spec, NULL);
    if (st->DeferredCoreType == NULL) {
        return -1;
    }
    /* A tuple: 3.9 accepts nothing else for the bases. */
    PyObject *bases = PyTuple_Pack(1, st->DeferredCoreType);
    if (bases == NULL) {
        return -1;
    }
    st->ControllableCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &cdef_controllable_spec, bases);
    if (st->ControllableCoreType == NULL) {
        Py_DECREF(bases);
        return -1;
    }
    st->AwaitIterType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &cdef_awaititer_spec, NULL);
    if (st->AwaitIterType == NULL) {
        return -1;
    }
    st->DriverType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &cdef_driver_spec, NULL);
    if (st->DriverType == NULL
        || PyModule_AddFunctions(module, cdef_driver_functions) < 0
        || PyModule_AddFunctions(module, cdef_deferred_functions) < 0) {
        return -1;
    }
    st->DeferredListCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &cdef_deferredlist_spec, bases);
    Py_DECREF(bases);
    if (st->DeferredListCoreType == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->DeferredCoreType) < 0
        || PyModule_AddType(module, st->ControllableCoreType) < 0
        || PyModule_AddType(module, st->DeferredListCoreType) < 0) {
        return -1;
    }

    /* Imports from Twisted. */
    st->defer_module = PyImport_ImportModule("twisted.internet.defer");
    if (st->defer_module == NULL) {
        return -1;
    }
#define FROM_DEFER(field, name)                                               \
    st->field = PyObject_GetAttrString(st->defer_module, name);               \
    if (st->field == NULL) {                                                  \
        return -1;                                                            \
    }
    FROM_DEFER(TwistedDeferred, "Deferred")
    FROM_DEFER(Failure, "Failure")
    FROM_DEFER(CancelledError, "CancelledError")
    FROM_DEFER(AlreadyCalledError, "AlreadyCalledError")
    FROM_DEFER(DebugInfo, "DebugInfo")
    FROM_DEFER(passthru, "passthru")
    FROM_DEFER(failthru, "_failthru")
    FROM_DEFER(CONTINUE, "_CONTINUE")
    FROM_DEFER(NONE_KWARGS, "_NONE_KWARGS")
    FROM_DEFER(deferred_subclasses, "_DEFERRED_SUBCLASSES")
    FROM_DEFER(NotACoroutineError, "NotACoroutineError")
    FROM_DEFER(DefGen_Return, "_DefGen_Return")
    FROM_DEFER(iscoroutine, "iscoroutine")
    FROM_DEFER(FirstError, "FirstError")
    FROM_DEFER(defer_log, "log")
#undef FROM_DEFER
    if (!PyType_Check(st->Failure)
        || !PyType_IsSubtype((PyTypeObject *)st->Failure,
                             (PyTypeObject *)PyExc_BaseException)) {
        PyErr_SetString(PyExc_ImportError,
                        "twisted.python.failure.Failure does not derive from "
                        "BaseException: unsupported Twisted version");
        return -1;
    }
    /* failure.c builds Failures as this __init__ does, while it is the one. */
    st->Failure_init = PyObject_GetAttrString(st->Failure, "__init__");
    if (st->Failure_init == NULL) {
        return -1;
    }
    st->failure_globals = PyObject_GetAttrString(st->Failure_init,
                                                 "__globals__");
    if (st->failure_globals == NULL) {
        PyErr_Clear(); /* not a Python function: Failure() is always called */
        st->failure_globals = PyDict_New();
        Py_SETREF(st->Failure_init, Py_NewRef(Py_None));
    }
    st->failure_parents = PyDict_New();
    st->int_one = PyLong_FromLong(1);
    if (st->failure_globals == NULL || !PyDict_Check(st->failure_globals)
        || st->failure_parents == NULL || st->int_one == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ImportError, "Failure.__init__ has odd "
                                               "__globals__");
        }
        return -1;
    }
    if (!PyList_Check(st->deferred_subclasses)) {
        PyErr_SetString(PyExc_ImportError,
                        "twisted.internet.defer._DEFERRED_SUBCLASSES is not a "
                        "list: unsupported Twisted version");
        return -1;
    }
    st->PyDeferredType = (PyTypeObject *)import_attr("cdeferred._pydeferred",
                                                     "Deferred");
    if (st->PyDeferredType == NULL) {
        return -1;
    }
    if (!PyType_Check(st->PyDeferredType)) {
        PyErr_SetString(PyExc_ImportError,
                        "cdeferred._pydeferred.Deferred is not a class");
        return -1;
    }
    st->warnAboutFunction = import_attr("twisted.python.deprecate",
                                        "warnAboutFunction");
    st->logCancellerFailure = import_attr("cdeferred._logging",
                                          "logCancellerFailure");
    st->recordCreator = import_attr("cdeferred._logging", "recordCreator");
    st->recordInvoker = import_attr("cdeferred._logging", "recordInvoker");
    st->warnReturnValue = import_attr("cdeferred._logging",
                                      "warnReturnValue");
    if (st->warnAboutFunction == NULL || st->logCancellerFailure == NULL
        || st->recordCreator == NULL || st->recordInvoker == NULL
        || st->warnReturnValue == NULL) {
        return -1;
    }

    if (intern(&st->str_debug, "debug") < 0
        || intern(&st->str_result, "result") < 0
        || intern(&st->str_paused, "paused") < 0
        || intern(&st->str_callbacks, "_callbacks") < 0
        || intern(&st->str_chainedTo, "_chainedTo") < 0
        || intern(&st->str_debugInfo, "_debugInfo") < 0
        || intern(&st->str_failResult, "failResult") < 0
        || intern(&st->str_cancel, "cancel") < 0
        || intern(&st->str_runCallbacks, "_runCallbacks") < 0
        || intern(&st->str_getDebugTracebacks, "_getDebugTracebacks") < 0
        || intern(&st->str_raiseException, "raiseException") < 0
        || intern(&st->str_captureVars, "captureVars") < 0
        || intern(&st->str_addBoth, "addBoth") < 0
        || intern(&st->str_Deferred, "Deferred") < 0
        || intern(&st->str_cbDeferred, "_cbDeferred") < 0
        || intern(&st->str_init, "__init__") < 0
        || intern(&st->str_parents, "_parents") < 0
        || intern(&st->str_module, "__module__") < 0
        || intern(&st->str_name, "__name__") < 0
        || intern(&st->str_dot, ".") < 0
        || intern(&st->str_count, "count") < 0
        || intern(&st->str_type, "type") < 0
        || intern(&st->str_tb, "tb") < 0
        || intern(&st->str_class, "__class__") < 0
        || intern(&st->str_callback, "callback") < 0
        || intern(&st->str_errback, "errback") < 0
        || intern(&st->str_send, "send") < 0
        || intern(&st->str_value, "value") < 0
        || intern(&st->str_throwExceptionIntoGenerator,
                  "throwExceptionIntoGenerator") < 0) {
        return -1;
    }
    st->kwnames_captureVars = PyTuple_Pack(1, st->str_captureVars);
    if (st->kwnames_captureVars == NULL) {
        return -1;
    }
    /* Failure.__init__'s instance dict, keys in its order (failure.c). */
    st->failure_template = Py_BuildValue(
        "{OOOOOOOOOOOO}", st->str_count, Py_None, st->str_type, Py_None,
        st->str_value, Py_None, st->str_captureVars, Py_False, st->str_tb,
        Py_None, st->str_parents, Py_None);
    if (st->failure_template == NULL) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

PyModuleDef cdef_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cdeferred._cdeferred",
    .m_doc = "The C core of cdeferred: DeferredCore, ControllableCore, "
             "DeferredListCore and the coroutine driver.",
    .m_size = sizeof(cdef_state),
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__cdeferred(void)
{
    return PyModuleDef_Init(&cdef_module_def);
}
