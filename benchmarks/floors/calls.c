/* A CPython extension with two one-argument functions that do nothing: one keeps the GIL, one
 * releases and re-takes it as every cffi call does. Timed against a cffi call by floors.py. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static volatile long sink;

static PyObject *keep_gil(PyObject *self, PyObject *arg)
{
    (void)self, (void)arg;
    sink++;
    Py_RETURN_NONE;
}

static PyObject *release_gil(PyObject *self, PyObject *arg)
{
    (void)self, (void)arg;
    Py_BEGIN_ALLOW_THREADS sink++;
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"keep_gil", keep_gil, METH_O, NULL},
    {"release_gil", release_gil, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "floor_calls", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_floor_calls(void)
{
    return PyModule_Create(&module);
}
