/* The per-message calls (publish one, take one, take a batch, sleep then take one, view one)
 * through the CPython API.
 *
 * Everything else goes through cffi (the _core package). These run once per message, where
 * cffi's per-call cost dominates: a cffi call releases and retakes the GIL and converts its
 * arguments (ffi.from_buffer for a bytearray costs more again), and the bytes and the Message
 * are then built in Python. Here a message costs one call (docs/benchmarks.md, "One hop, piece
 * by piece", has the figures). The C core is not compiled in again: _core/lib.py hands over the
 * cffi module's own function pointers (bind), and the objects below hold the cffi objects that
 * own the writer and the reader, so that those outlive every call. docs/architecture.md, "Two
 * bindings", says why. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "shmpubsub.h"

/* Copies from this size up run with the GIL released, as through cffi: they take microseconds. */
#define RELEASE_GIL_FROM 65536

typedef int64_t (*publish_fn)(struct sps_writer *, const char *, uint64_t);
typedef int64_t (*take_fn)(struct sps_reader *);
typedef int64_t (*sleep_take_fn)(struct sps_reader *, int);
typedef int (*view_end_fn)(struct sps_reader *);

static publish_fn core_publish;
static take_fn core_take, core_take_wait, core_take_many, core_view_begin;
static sleep_take_fn core_sleep_take;
static view_end_fn core_view_end;
static PyObject *str_data, *str_seq, *str_payloads;

/* What both kinds of callable hold: the cffi objects that own the structure they call the
 * core with (so that it outlives every call), the type of what they build, the Python code
 * that handles every outcome but the common one, and for views the mapping they slice. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *owner;
    PyTypeObject *result; /* NULL for Publish and the view modes */
    PyObject *slow;
    PyObject *mapping;    /* "view": a memoryview of the whole mapping; else NULL */
} Bound;

/* Publish(owner, address, slow): publish(data) -> sequence number.
 * Any other outcome (a refusal, sleepers to wake, data that is not a contiguous buffer) is
 * left to slow(code, data), code None for the buffer; its result is returned. */
typedef struct {
    Bound bound;
    struct sps_writer *w;
} Publish;

/* Take(owner, address, result_type, slow, mode[, mapping]), by mode:
 *   "read"       read() -> the next message
 *   "read_wait"  read_wait(spin_ns) -> the same, having spun up to spin_ns for one
 *   "read_many"  read_many(max_messages) -> the messages there are, up to max_messages
 *   "sleep_read" sleep_read(timeout_ms) -> for an armed reader: sleeps until woken (or the
 *                time-out, -1: none), then read(); the reader's woke says what woke it
 *   "view"       view() -> (data, seq) for the next message read in place: data is a slice
 *                of *mapping* (which keeps the mapping alive while it exists)
 *   "view_end"   view_end() -> True if the viewed message was intact throughout
 * A message is a result_type with data and seq set; a batch one with payloads (a list of
 * bytes) and seq (the first's). Both are built without calling __init__ (the view modes
 * take None for result_type). Every other outcome is left to slow(code). A wait first looks
 * with the GIL held; only when there is nothing yet does it release the GIL and spin. Copies run with the GIL held (at most 64 KiB: scratch),
 * except the one straight after a sleep, which is part of the sleeping call. */
typedef struct {
    Bound bound;
    struct sps_reader *r;
    uint64_t batch_capacity; /* read_many: entries in r->ends */
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

/* A new Publish or Take (type's size), not yet tracked by the garbage collector. */
static Bound *bound_new(PyTypeObject *type, PyObject *kwargs, vectorcallfunc call, PyObject *owner,
                        PyObject *result, PyObject *slow, PyObject *mapping)
{
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_Format(PyExc_TypeError, "%s takes no keyword arguments", type->tp_name);
        return NULL;
    }
    if (!PyCallable_Check(slow)) {
        PyErr_Format(PyExc_TypeError, "%s: slow must be callable", type->tp_name);
        return NULL;
    }
    Bound *self = PyObject_GC_New(Bound, type); /* tp_basicsize: the whole Publish or Take */
    if (self == NULL)
        return NULL;
    self->vectorcall = call;
    self->owner = Py_NewRef(owner);
    self->result = (PyTypeObject *)Py_XNewRef(result);
    self->slow = Py_NewRef(slow);
    self->mapping = Py_XNewRef(mapping);
    return self;
}

static int bound_traverse(PyObject *self_, visitproc visit, void *arg)
{
    Bound *self = (Bound *)self_;
    Py_VISIT(self->owner);
    Py_VISIT(self->result);
    Py_VISIT(self->slow);
    Py_VISIT(self->mapping);
    return 0;
}

static int bound_clear(PyObject *self_)
{
    Bound *self = (Bound *)self_;
    Py_CLEAR(self->owner);
    Py_CLEAR(self->result);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->mapping);
    return 0;
}

static void bound_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    bound_clear(self);
    PyObject_GC_Del(self);
}

#define BOUND_TYPE(c_type, name, doc, new)                                                  \
    {                                                                                       \
        PyVarObject_HEAD_INIT(NULL, 0)                                                      \
        .tp_name = name, .tp_doc = doc, .tp_basicsize = sizeof(c_type),                     \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,   \
        .tp_vectorcall_offset = offsetof(Bound, vectorcall), .tp_call = PyVectorcall_Call,  \
        .tp_new = new, .tp_traverse = bound_traverse, .tp_clear = bound_clear,              \
        .tp_dealloc = bound_dealloc,                                                        \
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

static int no_arguments(const char *function, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) == 0 && kwnames == NULL)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes no arguments", function);
    return -1;
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
            return PyObject_CallFunctionObjArgs(self->bound.slow, Py_None, data, NULL);
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
    PyObject *result = PyObject_CallFunctionObjArgs(self->bound.slow, code, data, NULL);
    Py_DECREF(code);
    return result;
}

static PyObject *publish_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *owner, *address, *slow;
    if (check_bound() < 0 || !PyArg_ParseTuple(args, "OOO:Publish", &owner, &address, &slow))
        return NULL;
    void *w = address_of(address);
    if (w == NULL)
        return NULL;
    Publish *self = (Publish *)bound_new(type, kwargs, publish_call, owner, NULL, slow, NULL);
    if (self == NULL)
        return NULL;
    self->w = w;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyTypeObject PublishType = BOUND_TYPE(Publish, "shmpubsub._fastpath.Publish",
    "publish(data) -> sequence number, one C call (see _core.Writer)", publish_new);

/* -- Take ----------------------------------------------------------------------------- */

/* A result_type with its two fields set; steals the reference to *content*. */
static PyObject *new_result(Take *self, PyObject *name, PyObject *content, uint64_t seq_number)
{
    if (content == NULL)
        return NULL;
    PyObject *result = self->bound.result->tp_alloc(self->bound.result, 0);
    PyObject *seq = result == NULL ? NULL : PyLong_FromUnsignedLongLong(seq_number);
    int rc = seq == NULL ? -1 : PyObject_SetAttr(result, name, content);
    rc = rc < 0 ? -1 : PyObject_SetAttr(result, str_seq, seq);
    Py_DECREF(content);
    Py_XDECREF(seq);
    if (rc < 0) {
        Py_XDECREF(result);
        return NULL;
    }
    return result;
}

static PyObject *call_slow(Take *self, int64_t code)
{
    PyObject *value = PyLong_FromLongLong(code);
    if (value == NULL)
        return NULL;
    PyObject *result = PyObject_CallOneArg(self->bound.slow, value);
    Py_DECREF(value);
    return result;
}

static PyObject *take_one(Take *self, uint64_t spin_ns)
{
    struct sps_reader *r = self->r;
    int64_t n = core_take(r);
    if (n == SPS_EMPTY && spin_ns > 0) {
        r->spin_ns = spin_ns;
        Py_BEGIN_ALLOW_THREADS
        n = core_take_wait(r);
        Py_END_ALLOW_THREADS
    }
    if (n < 0)
        return call_slow(self, n);
    return new_result(self, str_data, PyBytes_FromStringAndSize(r->scratch, (Py_ssize_t)n), r->last_seq);
}

static PyObject *read_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    (void)args;
    if (no_arguments("read", nargsf, kwnames) < 0)
        return NULL;
    return take_one((Take *)self, 0);
}

/* A count argument: an int of at least *least*. */
static int count_argument(const char *function, const char *name, PyObject *const *args,
                          size_t nargsf, PyObject *kwnames, uint64_t least, uint64_t *count)
{
    PyObject *arg = one_argument(function, name, args, nargsf, kwnames);
    if (arg == NULL)
        return -1;
    *count = PyLong_AsUnsignedLongLong(arg);
    if (*count == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    if (*count < least) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be at least %llu", function, name,
                     (unsigned long long)least);
        return -1;
    }
    return 0;
}

static PyObject *read_wait_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    uint64_t spin_ns;
    if (count_argument("read_wait", "spin_ns", args, nargsf, kwnames, 0, &spin_ns) < 0)
        return NULL;
    return take_one((Take *)self, spin_ns);
}

static PyObject *sleep_read_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Take *self = (Take *)self_;
    PyObject *arg = one_argument("sleep_read", "timeout_ms", args, nargsf, kwnames);
    if (arg == NULL)
        return NULL;
    long timeout_ms = PyLong_AsLong(arg);
    if (timeout_ms == -1 && PyErr_Occurred())
        return NULL;
    if (timeout_ms < -1 || timeout_ms > INT_MAX)
        return PyErr_Format(PyExc_ValueError, "sleep_read: timeout_ms must be -1 or 0 to %d", INT_MAX);
    struct sps_reader *r = self->r;
    int64_t n;
    Py_BEGIN_ALLOW_THREADS
    n = core_sleep_take(r, (int)timeout_ms);
    Py_END_ALLOW_THREADS
    if (r->woke == -EINTR && PyErr_CheckSignals() < 0)
        return NULL; /* a signal handler raised (Ctrl-C): as select.epoll.poll does */
    if (n < 0)
        return call_slow(self, n);
    return new_result(self, str_data, PyBytes_FromStringAndSize(r->scratch, (Py_ssize_t)n), r->last_seq);
}

static PyObject *read_many_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Take *self = (Take *)self_;
    struct sps_reader *r = self->r;
    uint64_t most;
    if (count_argument("read_many", "max_messages", args, nargsf, kwnames, 1, &most) < 0)
        return NULL;
    r->batch_max = most < self->batch_capacity ? most : self->batch_capacity;
    int64_t count = core_take_many(r);
    if (count <= 0)
        return call_slow(self, count);
    PyObject *payloads = PyList_New((Py_ssize_t)count);
    if (payloads == NULL)
        return NULL;
    uint64_t start = 0;
    for (int64_t i = 0; i < count; i++) {
        PyObject *payload = PyBytes_FromStringAndSize(r->scratch + start, (Py_ssize_t)(r->ends[i] - start));
        if (payload == NULL) {
            Py_DECREF(payloads);
            return NULL;
        }
        PyList_SET_ITEM(payloads, i, payload);
        start = r->ends[i];
    }
    return new_result(self, str_payloads, payloads, r->last_seq - (uint64_t)count + 1);
}

/* mapping[start:stop], a memoryview sharing the mapping's buffer (and keeping it alive). */
static PyObject *slice_of(PyObject *mapping, uint64_t start, uint64_t stop)
{
    PyObject *from = PyLong_FromUnsignedLongLong(start);
    PyObject *to = from == NULL ? NULL : PyLong_FromUnsignedLongLong(stop);
    PyObject *slice = to == NULL ? NULL : PySlice_New(from, to, NULL);
    PyObject *data = slice == NULL ? NULL : PyObject_GetItem(mapping, slice);
    Py_XDECREF(from);
    Py_XDECREF(to);
    Py_XDECREF(slice);
    return data;
}

static PyObject *view_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    (void)args;
    Take *self = (Take *)self_;
    if (no_arguments("view", nargsf, kwnames) < 0)
        return NULL;
    struct sps_reader *r = self->r;
    int64_t n = core_view_begin(r);
    if (n < 0)
        return call_slow(self, n);
    PyObject *data = slice_of(self->bound.mapping, r->view_offset, r->view_offset + (uint64_t)n);
    if (data == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        PyErr_Clear(); /* the mapping's view was released: the subscriber closed */
        return call_slow(self, SPS_CLOSED);
    }
    PyObject *seq = PyLong_FromUnsignedLongLong(r->view_next);
    PyObject *located = seq == NULL ? NULL : PyTuple_Pack(2, data, seq);
    Py_DECREF(data);
    Py_XDECREF(seq);
    return located;
}

static PyObject *view_end_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    (void)args;
    Take *self = (Take *)self_;
    if (no_arguments("view_end", nargsf, kwnames) < 0)
        return NULL;
    int rc = core_view_end(self->r);
    if (rc == SPS_OK)
        Py_RETURN_TRUE;
    return call_slow(self, rc);
}

static PyObject *take_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *owner, *address, *result, *slow, *mapping = NULL;
    const char *mode;
    if (check_bound() < 0 ||
        !PyArg_ParseTuple(args, "OOOOs|O:Take", &owner, &address, &result, &slow, &mode, &mapping))
        return NULL;
    vectorcallfunc call = strcmp(mode, "read") == 0         ? read_call
                          : strcmp(mode, "read_wait") == 0  ? read_wait_call
                          : strcmp(mode, "read_many") == 0  ? read_many_call
                          : strcmp(mode, "sleep_read") == 0 ? sleep_read_call
                          : strcmp(mode, "view") == 0       ? view_call
                          : strcmp(mode, "view_end") == 0   ? view_end_call
                                                            : NULL;
    if (call == NULL)
        return PyErr_Format(PyExc_ValueError, "Take: unknown mode %s", mode);
    int builds = call != view_call && call != view_end_call;
    if (builds ? !PyType_Check(result) : result != Py_None)
        return PyErr_Format(PyExc_TypeError, "Take: mode %s needs %s as result_type", mode,
                            builds ? "a type" : "None");
    if (call == view_call ? mapping == NULL || !PyMemoryView_Check(mapping) : mapping != NULL)
        return PyErr_Format(PyExc_TypeError, "Take: a mapping (memoryview) is for mode view alone");
    struct sps_reader *r = address_of(address);
    if (r == NULL)
        return NULL;
    if (r->scratch == NULL || (call == read_many_call && (r->ends == NULL || r->batch_max == 0)))
        return PyErr_Format(PyExc_ValueError, "Take: the reader has no buffers for %s", mode);
    Take *self = (Take *)bound_new(type, kwargs, call, owner, builds ? result : NULL, slow, mapping);
    if (self == NULL)
        return NULL;
    self->r = r;
    self->batch_capacity = r->batch_max; /* set by the caller to the size of r->ends */
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyTypeObject TakeType = BOUND_TYPE(Take, "shmpubsub._fastpath.Take",
    "read(), read_wait(spin_ns), read_many(max_messages), sleep_read(timeout_ms), view() or "
    "view_end(), one C call (see _core.Reader)", take_new);

/* -- the module ----------------------------------------------------------------------- */

/* bind(publish, take, take_wait, take_many, sleep_take, view_begin, view_end): the addresses
 * of sps_publish_waking, sps_take, sps_take_wait, sps_take_many, sps_sleep_take,
 * sps_view_begin and sps_view_end in the cffi module (ffi.addressof), so that there is one
 * copy of the core in the process. */
static PyObject *bind(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *p, *t, *tw, *tm, *st, *vb, *ve;
    if (!PyArg_ParseTuple(args, "OOOOOOO:bind", &p, &t, &tw, &tm, &st, &vb, &ve))
        return NULL;
    void *publish = address_of(p), *take = address_of(t);
    void *take_wait = address_of(tw), *take_many = address_of(tm), *sleep_take = address_of(st);
    void *view_begin = address_of(vb), *view_end = address_of(ve);
    if (publish == NULL || take == NULL || take_wait == NULL || take_many == NULL || sleep_take == NULL ||
        view_begin == NULL || view_end == NULL)
        return NULL;
    /* Object pointers to function pointers: what dlsym() does too; POSIX guarantees it. */
    core_publish = (publish_fn)publish;
    core_take = (take_fn)take;
    core_take_wait = (take_fn)take_wait;
    core_take_many = (take_fn)take_many;
    core_sleep_take = (sleep_take_fn)sleep_take;
    core_view_begin = (take_fn)view_begin;
    core_view_end = (view_end_fn)view_end;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS,
     "bind(publish, take, take_wait, take_many, sleep_take, view_begin, view_end): the core's "
     "functions, by address"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "shmpubsub._fastpath",
    .m_doc = "Publish one message, take or view one through the CPython API (the rest goes through cffi)",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&PublishType) < 0 || PyType_Ready(&TakeType) < 0)
        return NULL;
    str_data = PyUnicode_InternFromString("data");
    str_seq = PyUnicode_InternFromString("seq");
    str_payloads = PyUnicode_InternFromString("payloads");
    if (str_data == NULL || str_seq == NULL || str_payloads == NULL)
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
