"""Keep freed memory for reuse: two glibc malloc settings that a NumPy training loop needs.

Every NumPy array's memory comes from the C library's malloc. glibc serves a
large block (above a threshold that starts at 128 KiB and rises, as such
blocks are freed, up to 32 MiB) as a fresh memory mapping, and hands the
free memory at the top of its heap back to the operating system as soon as
there is more of it than twice that threshold. A training step frees almost
everything it allocated (the activations, the gradients, the im2col columns),
so the next step asks the system for the same memory again, and the kernel
maps it and zeroes every page on its first write. Measured on the 2-core
machine with `getrusage` (the default settings, 2 threads, batch 64):

    ConvVAE-28 training step     4,000 page faults, 7 ms of system time, of 19-22 ms
    DCGAN-28 training step       3,900 page faults, 5-9 ms of system time, of 65-75 ms

Two settings (glibc's `mallopt`) end it: blocks up to 32 MiB come from the
heap (M_MMAP_THRESHOLD) and up to 1 GiB of free heap stays with the process
(M_TRIM_THRESHOLD). Both steps then fault a handful of pages at most; the
ConvVAE step ran in 13.4-13.8 ms against 18.6-19.9 ms without them (fastest
of six blocks, two runs each), the DCGAN step within the machine's noise
(60-72 against 63-66 ms): its convolutions dominate it. The price: the process
keeps the memory of its largest step until it exits, as PyTorch's GPU
allocator keeps its cache.

`import tinygen` applies them (`tinygen.info()` reports the outcome). They
belong to the whole process: any library in it, PyTorch included, gets the
same malloc, so the benchmarks compare the engines on equal terms.
TINYGEN_MALLOC=system leaves malloc as it is. Other C libraries (macOS,
musl) are left alone.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers, from <malloc.h>
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 1 << 30

STATUS = "not applied yet"  # what keep_freed_memory() did, for tinygen.info()


def glibc_version() -> str | None:
    """'2.36' when the C library is glibc, else None."""
    try:
        name, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")
    except (AttributeError, ValueError, OSError):  # no confstr, or not this name
        return None
    return version if name == "glibc" else None


def keep_freed_memory() -> str:
    """Apply the two settings when the C library is glibc; return what was done and why."""
    global STATUS
    if os.environ.get("TINYGEN_MALLOC", "").strip().lower() == "system":
        STATUS = "system malloc settings (TINYGEN_MALLOC=system)"
    elif glibc_version() is None:
        STATUS = "system malloc settings (the C library is not glibc)"
    else:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        done = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        done = done and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        if done:
            STATUS = (
                f"glibc {glibc_version()}: freed memory kept (mmap threshold "
                f"{MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB)"
            )
        else:
            STATUS = "system malloc settings (glibc's mallopt refused them)"
    return STATUS
