/* The per-message calls (publish one, take one) through the CPython API.
 *
 * Everything else goes through cffi (_core.py). These two run once per message, where cffi's
 * per-call cost dominates: a cffi call releases and retakes the GIL and converts its arguments
 * (115-160 ns here; ffi.from_buffer for a bytearray 250-330 ns more), and the bytes and the
 * Message are then built in Python (~300 ns). Here a message costs one call. The C core is not
 * compiled in again: _core.py hands over the cffi module's own function pointers (bind), and
 * the objects below hold the cffi objects that own the writer and the reader, so that those
 * outlive every call. docs/architecture.md, "Two bindings", has the figures. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

#include "shmpubsub.h"

/* Copies from this size up run with the GIL released, as through cffi: they take microseconds. */
#define RELEASE_GIL_FROM 65536

typedef int64_t (*publish_fn)(struct sps_writer *, const char *, uint64_t);
typedef int64_t (*take_fn)(struct sps_reader *);

static publish_fn core_publish;
static take_fn core_take, core_take_wait;
static PyObject *str_data, *str_seq;

/* Publish(owner, address, slow): publish(data) -> sequence number.
 * Any other outcome (a refusal, sleepers to wake, data that is not a contiguous buffer) is
 * left to slow(code, data), code None for the buffer; its result is returned. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    struct sps_writer *w;
    PyObject *owner; /* the cffi object that owns *w */
    PyObject *slow;
} Publish;

/* Take(owner, address, message_type, slow, wait): take() or, with wait, take(spin_ns): the
 * next message (message_type, built without calling __init__: data and seq set), or
 * slow(code) for every other outcome. A wait first looks with the GIL held; only when there
 * is nothing yet does it release the GIL and spin for up to spin_ns. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    struct sps_reader *r;
    PyObject *owner; /* the cffi objects that own *r and its scratch */
    PyTypeObject *message;
    PyObject *slow;
    int wait;
} Take;

static int check_bound(void)
{
    if (core_publish == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "shmpubsub._fastpath: bind() was not called");
        return -1;
    }
    return 0;
}

static void *address_of(PyObject *address)
{
    void *p = PyLong_AsVoidPtr(address);
    if (p == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "null address");
    return p;
}

/* The one argument of a call, given by position or by the keyword name. */
static PyObject *one_argument(const char *function, const char *name, PyObject *const *args,
                              size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs + nkw == 1) {
        if (nkw == 0)
            return args[0];
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), name) == 0)
            return args[0];
    }
    PyErr_Format(PyExc_TypeError, "%s() takes exactly one argument (%s)", function, name);
    return NULL;
}

/* -- Publish -------------------------------------------------------------------------- */

static PyObject *publish_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Publish *self = (Publish *)self_;
    PyObject *data = one_argument("publish", "data", args, nargsf, kwnames);
    if (data == NULL)
        return NULL;
    int64_t rc;
    if (PyBytes_CheckExact(data)) {
        const char *bytes = PyBytes_AS_STRING(data);
        uint64_t len = (uint64_t)PyBytes_GET_SIZE(data);
        if (len < RELEASE_GIL_FROM) {
            rc = core_publish(self->w, bytes, len);
        } else {
            Py_BEGIN_ALLOW_THREADS
            rc = core_publish(self->w, bytes, len);
            Py_END_ALLOW_THREADS
        }
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            PyErr_Clear(); /* the slow path says what is wrong, in the library's terms */
            return PyObject_CallFunctionObjArgs(self->slow, Py_None, data, NULL);
        }
        if (view.len < RELEASE_GIL_FROM) {
            rc = core_publish(self->w, view.buf, (uint64_t)view.len);
        } else {
            Py_BEGIN_ALLOW_THREADS
            rc = core_publish(self->w, view.buf, (uint64_t)view.len);
            Py_END_ALLOW_THREADS
        }
        PyBuffer_Release(&view);
    }
    if (rc >= 0)
        return PyLong_FromLongLong(rc);
    PyObject *code = PyLong_FromLongLong(rc);
    if (code == NULL)
        return NULL;
    PyObject *result = PyObject_CallFunctionObjArgs(self->slow, code, data, NULL);
    Py_DECREF(code);
    return result;
}

static PyObject *publish_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *owner, *address, *slow;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)
        return PyErr_Format(PyExc_TypeError, "Publish takes no keyword arguments");
    if (check_bound() < 0 || !PyArg_ParseTuple(args, "OOO:Publish", &owner, &address, &slow))
        return NULL;
    if (!PyCallable_Check(slow))
        return PyErr_Format(PyExc_TypeError, "Publish: slow must be callable");
    void *w = address_of(address);
    if (w == NULL)
        return NULL;
    Publish *self = PyObject_GC_New(Publish, type);
    if (self == NULL)
        return NULL;
    self->vectorcall = publish_call;
    self->w = w;
    self->owner = Py_NewRef(owner);
    self->slow = Py_NewRef(slow);
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int publish_traverse(PyObject *self_, visitproc visit, void *arg)
{
    Publish *self = (Publish *)self_;
    Py_VISIT(self->owner);
    Py_VISIT(self->slow);
    return 0;
}

static int publish_clear(PyObject *self_)
{
    Publish *self = (Publish *)self_;
    Py_CLEAR(self->owner);
    Py_CLEAR(self->slow);
    return 0;
}

static void publish_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    publish_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject PublishType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmpubsub._fastpath.Publish",
    .tp_doc = "publish(data) -> sequence number, one C call (see _core.Writer)",
    .tp_basicsize = sizeof(Publish),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Publish, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = publish_new,
    .tp_traverse = publish_traverse,
    .tp_clear = publish_clear,
    .tp_dealloc = publish_dealloc,
};

/* -- Take ----------------------------------------------------------------------------- */

static PyObject *new_message(Take *self, int64_t len)
{
    struct sps_reader *r = self->r;
    PyObject *message = self->message->tp_alloc(self->message, 0);
    if (message == NULL)
        return NULL;
    PyObject *data = PyBytes_FromStringAndSize(r->scratch, (Py_ssize_t)len);
    PyObject *seq = data == NULL ? NULL : PyLong_FromUnsignedLongLong(r->last_seq);
    int rc = seq == NULL ? -1 : PyObject_SetAttr(message, str_data, data);
    rc = rc < 0 ? -1 : PyObject_SetAttr(message, str_seq, seq);
    Py_XDECREF(data);
    Py_XDECREF(seq);
    if (rc < 0) {
        Py_DECREF(message);
        return NULL;
    }
    return message;
}

static PyObject *take_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Take *self = (Take *)self_;
    struct sps_reader *r = self->r;
    uint64_t spin_ns = 0;
    if (self->wait) {
        PyObject *arg = one_argument("read_wait", "spin_ns", args, nargsf, kwnames);
        if (arg == NULL)
            return NULL;
        spin_ns = PyLong_AsUnsignedLongLong(arg);
        if (spin_ns == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
    } else if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "read() takes no arguments");
        return NULL;
    }
    int64_t n = core_take(r);
    if (n == SPS_EMPTY && spin_ns > 0) {
        r->spin_ns = spin_ns;
        Py_BEGIN_ALLOW_THREADS
        n = core_take_wait(r);
        Py_END_ALLOW_THREADS
    }
    if (n >= 0)
        return new_message(self, n);
    PyObject *code = PyLong_FromLongLong(n);
    if (code == NULL)
        return NULL;
    PyObject *result = PyObject_CallOneArg(self->slow, code);
    Py_DECREF(code);
    return result;
}

static PyObject *take_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *owner, *address, *message, *slow;
    int wait;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)
        return PyErr_Format(PyExc_TypeError, "Take takes no keyword arguments");
    if (check_bound() < 0 ||
        !PyArg_ParseTuple(args, "OOO!Op:Take", &owner, &address, &PyType_Type, &message, &slow, &wait))
        return NULL;
    if (!PyCallable_Check(slow))
        return PyErr_Format(PyExc_TypeError, "Take: slow must be callable");
    struct sps_reader *r = address_of(address);
    if (r == NULL)
        return NULL;
    if (r->scratch == NULL)
        return PyErr_Format(PyExc_ValueError, "Take: the reader has no scratch buffer");
    Take *self = PyObject_GC_New(Take, type);
    if (self == NULL)
        return NULL;
    self->vectorcall = take_call;
    self->r = r;
    self->owner = Py_NewRef(owner);
    self->message = (PyTypeObject *)Py_NewRef(message);
    self->slow = Py_NewRef(slow);
    self->wait = wait;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int take_traverse(PyObject *self_, visitproc visit, void *arg)
{
    Take *self = (Take *)self_;
    Py_VISIT(self->owner);
    Py_VISIT(self->message);
    Py_VISIT(self->slow);
    return 0;
}

static int take_clear(PyObject *self_)
{
    Take *self = (Take *)self_;
    Py_CLEAR(self->owner);
    Py_CLEAR(self->message);
    Py_CLEAR(self->slow);
    return 0;
}

static void take_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    take_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject TakeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmpubsub._fastpath.Take",
    .tp_doc = "read() or read_wait(spin_ns) -> the next message, one C call (see _core.Reader)",
    .tp_basicsize = sizeof(Take),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Take, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = take_new,
    .tp_traverse = take_traverse,
    .tp_clear = take_clear,
    .tp_dealloc = take_dealloc,
};

/* -- the module ----------------------------------------------------------------------- */

/* bind(publish, take, take_wait): the addresses of sps_publish, sps_take and sps_take_wait in
 * the cffi module (ffi.addressof), so that there is one copy of the core in the process. */
static PyObject *bind(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *p, *t, *tw;
    if (!PyArg_ParseTuple(args, "OOO:bind", &p, &t, &tw))
        return NULL;
    void *publish = address_of(p), *take = address_of(t), *take_wait = address_of(tw);
    if (publish == NULL || take == NULL || take_wait == NULL)
        return NULL;
    /* Object pointers to function pointers: what dlsym() does too; POSIX guarantees it. */
    core_publish = (publish_fn)publish;
    core_take = (take_fn)take;
    core_take_wait = (take_fn)take_wait;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "bind(publish, take, take_wait): the core's functions, by address"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "shmpubsub._fastpath",
    .m_doc = "Publish one message and take one through the CPython API (the rest goes through cffi)",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&PublishType) < 0 || PyType_Ready(&TakeType) < 0)
        return NULL;
    str_data = PyUnicode_InternFromString("data");
    str_seq = PyUnicode_InternFromString("seq");
    if (str_data == NULL || str_seq == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "RELEASE_GIL_FROM", RELEASE_GIL_FROM) < 0 ||
        PyModule_AddObjectRef(module, "Publish", (PyObject *)&PublishType) < 0 ||
        PyModule_AddObjectRef(module, "Take", (PyObject *)&TakeType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
