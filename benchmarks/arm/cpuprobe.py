"""Runs INSIDE the emulated guest: print a /proc/cpuinfo describing the emulated ARM core.

Under qemu user mode the guest would otherwise read the host's x86 /proc/cpuinfo, which makes
onnxruntime's CPU detection (the cpuinfo library) misdetect or crash. The features come from the
auxiliary vector (what the emulated core really offers), the part number from MIDR_EL1 (which
Linux, and qemu, let user space read).

Usage (guest): python3 cpuprobe.py NCPU
"""
import ctypes
import mmap
import struct
import sys

libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
hwcap, hwcap2 = libc.getauxval(16), libc.getauxval(26)  # AT_HWCAP, AT_HWCAP2
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(struct.pack("<II", 0xD5380000, 0xD65F03C0))  # mrs x0, midr_el1 ; ret
midr = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))()
# Bit order of HWCAP / HWCAP2 as in the Linux kernel's arch/arm64/include/uapi/asm/hwcap.h
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
         "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
          "svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme").split()
features = [n for i, n in enumerate(HWCAP) if hwcap >> i & 1] + [n for i, n in enumerate(HWCAP2) if hwcap2 >> i & 1]
for cpu in range(int(sys.argv[1])):
    sys.stdout.write(
        f"processor\t: {cpu}\nBogoMIPS\t: 50.00\nFeatures\t: {' '.join(features)}\n"
        f"CPU implementer\t: {midr >> 24 & 0xff:#x}\nCPU architecture: 8\nCPU variant\t: {midr >> 20 & 0xf:#x}\n"
        f"CPU part\t: {midr >> 4 & 0xfff:#05x}\nCPU revision\t: {midr & 0xf}\n\n")
