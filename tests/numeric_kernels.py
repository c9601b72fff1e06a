"""Pin the CPU kernels numpy, OpenBLAS and torch dispatch to, before any of them loads.

Imported first by ``conftest.py``; the variables are inherited by every process a test
starts (listener, workers, ``serve``).

Why: the tests that pin exact numbers differ in the last bits between CPUs. These are
the phantom's bytes (``test_phantom_sites``) and the demo bundle's probabilities
(``test_feature_path``). OpenBLAS, oneDNN, ATen and numpy each choose AVX-512 kernels on
a CPU that has them and AVX2 kernels elsewhere. Measured on an AVX-512 Xeon against
goldens recorded on an AVX2 EPYC:

- one phantom pixel rounds the other way;
- probabilities differ by up to 2e-5 relative;
- with these four variables the results are bit-identical.

AVX2 with FMA is what every x86-64-v3 machine has. Other architectures ignore the
variables. A value already in the environment is kept.
"""

from __future__ import annotations

import os
import sys

#: The variables, and the kernel family each one caps.
KERNELS = {
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS: its AVX2 kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # torch's convolutions (oneDNN)
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "NPY_DISABLE_CPU_FEATURES": "X86_V4,AVX512_ICL,AVX512_SPR",  # numpy's dispatch
}

_LOADED = [name for name in ("numpy", "torch", "scipy") if name in sys.modules]
if _LOADED:
    # Too late: the libraries chose their kernels when they loaded.
    raise RuntimeError(f"numeric_kernels imported after {', '.join(_LOADED)}; import it first")
for _name, _value in KERNELS.items():
    os.environ.setdefault(_name, _value)
