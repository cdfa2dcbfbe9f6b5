// biomatch._native: C++ kernels for the branchy per-pixel and skeleton loops
// of extraction. Called only by biomatch.extraction, which validates inputs.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
    m.doc() = "biomatch native kernels (extraction hot loops)";
    m.attr("ABI_VERSION") = 1;
}
