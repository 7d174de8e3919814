"""The CPU part of the hardware probe: brand, architecture, cores, instruction sets.

Instruction sets decide which of llama.cpp's CPU kernels run (AVX2/AVX-512/AMX on
x86, NEON dot product/I8MM/SVE on ARM), so the probe reports the ones that matter
to it, read from what the operating system says:

- Linux: ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on ARM);
- macOS: ``sysctl`` (``machdep.cpu.*`` and ``hw.optional.*``);
- Windows: ``IsProcessorFeaturePresent`` from kernel32.

The parsers are pure functions over the OS's text so they can be checked against
saved samples from other machines. Feature names follow the Linux flag spelling
(``avx512_vnni``, ``sse4.2``) with ARM features named as llama.cpp names them
(``neon``, ``dotprod``, ``i8mm``, ``sve``, ``fp16``).
"""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from quant.hardware.profile import CpuInfo

logger = logging.getLogger(__name__)

# Runs ``sysctl`` for the given keys and returns the keys it knows with their values.
SysctlRunner = Callable[[Sequence[str]], Mapping[str, str]]

SYSCTL_TIMEOUT_S = 2.0

# Display order of every feature the probe reports.
FEATURE_ORDER: tuple[str, ...] = (
    # x86
    "ssse3",
    "sse4.2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vbmi",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    # ARM
    "neon",
    "dotprod",
    "i8mm",
    "fp16",
    "bf16",
    "sve",
    "sve2",
    "sme",
)

# Linux x86 ``flags`` token -> reported feature.
_X86_LINUX_FLAGS: dict[str, str] = {
    "ssse3": "ssse3",
    "sse4_2": "sse4.2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "bmi2": "bmi2",
    "avx_vnni": "avx_vnni",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512vbmi": "avx512_vbmi",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16",
    "amx_tile": "amx_tile",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}

# Linux ARM ``Features`` token -> reported feature. ``neon`` is the 32-bit spelling,
# ``asimd`` the 64-bit one; ``asimdhp`` is half-precision vector arithmetic (what
# llama.cpp's FP16 kernels need), ``fphp`` its scalar half.
_ARM_LINUX_FEATURES: dict[str, str] = {
    "asimd": "neon",
    "neon": "neon",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "asimdhp": "fp16",
    "fphp": "fp16",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
    "sme": "sme",
}

# macOS ``hw.optional`` keys (value 1 when present) -> reported feature.
_MAC_OPTIONAL_KEYS: dict[str, str] = {
    "hw.optional.AdvSIMD": "neon",
    "hw.optional.neon": "neon",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_FP16": "fp16",
    "hw.optional.neon_fp16": "fp16",
    "hw.optional.arm.FEAT_BF16": "bf16",
    "hw.optional.arm.FEAT_SME": "sme",
    "hw.optional.supplementalsse3": "ssse3",
    "hw.optional.sse4_2": "sse4.2",
    "hw.optional.avx1_0": "avx",
    "hw.optional.avx2_0": "avx2",
    "hw.optional.fma": "fma",
    "hw.optional.bmi2": "bmi2",
    "hw.optional.avx512f": "avx512f",
    "hw.optional.avx512bw": "avx512bw",
    "hw.optional.avx512vl": "avx512vl",
    "hw.optional.avx512vbmi": "avx512_vbmi",
    "hw.optional.avx512vnni": "avx512_vnni",
}

# Intel Macs list their CPUID bits in ``machdep.cpu.features`` and
# ``machdep.cpu.leaf7_features`` (upper case, space separated).
_MAC_CPUID_TOKENS: dict[str, str] = {
    "SSSE3": "ssse3",
    "SSE4.2": "sse4.2",
    "AVX1.0": "avx",
    "AVX2": "avx2",
    "FMA": "fma",
    "F16C": "f16c",
    "BMI2": "bmi2",
    "AVX512F": "avx512f",
    "AVX512BW": "avx512bw",
    "AVX512VL": "avx512vl",
    "AVX512VBMI": "avx512_vbmi",
    "AVX512VNNI": "avx512_vnni",
}

MAC_CPU_SYSCTL_KEYS: tuple[str, ...] = (
    "machdep.cpu.brand_string",
    "machdep.cpu.features",
    "machdep.cpu.leaf7_features",
    "hw.optional.arm64",
    *_MAC_OPTIONAL_KEYS,
)

# Windows ``PF_*`` processor-feature numbers (winnt.h) -> reported feature.
_WINDOWS_X86_FEATURES: dict[int, str] = {
    36: "ssse3",  # PF_SSSE3_INSTRUCTIONS_AVAILABLE
    38: "sse4.2",  # PF_SSE4_2_INSTRUCTIONS_AVAILABLE
    39: "avx",  # PF_AVX_INSTRUCTIONS_AVAILABLE
    40: "avx2",  # PF_AVX2_INSTRUCTIONS_AVAILABLE
    41: "avx512f",  # PF_AVX512F_INSTRUCTIONS_AVAILABLE
    60: "bmi2",  # PF_BMI2_INSTRUCTIONS_AVAILABLE
}
_WINDOWS_ARM_FEATURES: dict[int, str] = {
    19: "neon",  # PF_ARM_NEON_INSTRUCTIONS_AVAILABLE
    43: "dotprod",  # PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE
    46: "sve",  # PF_ARM_SVE_INSTRUCTIONS_AVAILABLE
    47: "sve2",  # PF_ARM_SVE2_INSTRUCTIONS_AVAILABLE
    66: "i8mm",  # PF_ARM_V82_I8MM_INSTRUCTIONS_AVAILABLE
    67: "fp16",  # PF_ARM_V82_FP16_INSTRUCTIONS_AVAILABLE
    68: "bf16",  # PF_ARM_V86_BF16_INSTRUCTIONS_AVAILABLE
    70: "sme",  # PF_ARM_SME_INSTRUCTIONS_AVAILABLE
}

# Linux on ARM names no CPU model in /proc/cpuinfo; ``CPU implementer`` and
# ``CPU part`` identify the core (Arm's Technical Reference Manuals, MIDR_EL1).
_ARM_PARTS: dict[tuple[int, int], str] = {
    (0x41, 0xD03): "ARM Cortex-A53",
    (0x41, 0xD04): "ARM Cortex-A35",
    (0x41, 0xD05): "ARM Cortex-A55",
    (0x41, 0xD07): "ARM Cortex-A57",
    (0x41, 0xD08): "ARM Cortex-A72",
    (0x41, 0xD09): "ARM Cortex-A73",
    (0x41, 0xD0A): "ARM Cortex-A75",
    (0x41, 0xD0B): "ARM Cortex-A76",
    (0x41, 0xD0C): "ARM Neoverse-N1",
    (0x41, 0xD0D): "ARM Cortex-A77",
    (0x41, 0xD40): "ARM Neoverse-V1",
    (0x41, 0xD41): "ARM Cortex-A78",
    (0x41, 0xD44): "ARM Cortex-X1",
    (0x41, 0xD46): "ARM Cortex-A510",
    (0x41, 0xD47): "ARM Cortex-A710",
    (0x41, 0xD48): "ARM Cortex-X2",
    (0x41, 0xD49): "ARM Neoverse-N2",
    (0x41, 0xD4F): "ARM Neoverse-V2",
    (0x41, 0xD80): "ARM Cortex-A520",
    (0x41, 0xD81): "ARM Cortex-A720",
    (0x41, 0xD82): "ARM Cortex-X4",
    (0x41, 0xD84): "ARM Neoverse-V3",
    (0x41, 0xD8E): "ARM Neoverse-N3",
    (0x61, 0x022): "Apple M1",
    (0x61, 0x023): "Apple M1",
}


@dataclass(frozen=True)
class CpuinfoFacts:
    """What ``/proc/cpuinfo`` says: the CPU's name and its feature list."""

    brand: str | None
    features: tuple[str, ...]
    # "flags" (x86), "Features" (ARM) or None when neither line was present.
    feature_line: str | None


def order_features(features: Iterable[str]) -> tuple[str, ...]:
    """Deduplicate and sort features into :data:`FEATURE_ORDER` (unknown ones last)."""
    unique = set(features)
    if {"amx_tile", "amx_int8", "amx_bf16"} & unique:
        unique.add("amx")
    rank = {name: i for i, name in enumerate(FEATURE_ORDER)}
    return tuple(sorted(unique, key=lambda f: (rank.get(f, len(rank)), f)))


def features_from_x86_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """Map Linux x86 ``flags`` tokens to the features llama.cpp cares about.

    Any of ``amx_tile``/``amx_int8``/``amx_bf16`` also reports ``amx``.
    """
    return order_features(_X86_LINUX_FLAGS[f] for f in flags if f in _X86_LINUX_FLAGS)


def features_from_arm_features(tokens: Iterable[str]) -> tuple[str, ...]:
    """Map Linux ARM ``Features`` tokens (``asimd``, ``asimddp``, ``i8mm``…) to features."""
    return order_features(_ARM_LINUX_FEATURES[t] for t in tokens if t in _ARM_LINUX_FEATURES)


def parse_proc_cpuinfo(text: str) -> CpuinfoFacts:
    """Read the CPU name and features from the text of ``/proc/cpuinfo``.

    The first value of each field wins: Linux repeats the same flags for every
    logical CPU (hybrid cores included), and board lines such as ``Model`` come
    once at the end. The name comes from
    ``model name`` (x86), else ``Model``/``Hardware`` (Raspberry Pi and other
    boards), else the ARM implementer/part number.
    """
    fields: dict[str, str] = {}
    for row in text.splitlines():
        key, sep, value = row.partition(":")
        if not sep:
            continue
        name = key.strip()
        if name and name not in fields:
            fields[name] = value.strip()

    brand = fields.get("model name") or None
    if "flags" in fields:
        features = features_from_x86_flags(fields["flags"].split())
        line: str | None = "flags"
    elif "Features" in fields:
        features = features_from_arm_features(fields["Features"].split())
        line = "Features"
    else:
        features, line = (), None
    if brand is None:
        brand = fields.get("Model") or _arm_part_name(fields) or fields.get("Hardware") or None
    return CpuinfoFacts(brand=brand, features=features, feature_line=line)


def _arm_part_name(fields: Mapping[str, str]) -> str | None:
    try:
        implementer = int(fields["CPU implementer"], 0)
        part = int(fields["CPU part"], 0)
    except (KeyError, ValueError):
        return None
    return _ARM_PARTS.get((implementer, part))


def parse_sysctl_output(text: str) -> dict[str, str]:
    """Parse ``sysctl key1 key2 …`` output (``key: value`` lines) into a dict."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            values[key.strip()] = value.strip()
    return values


def run_sysctl(keys: Sequence[str]) -> dict[str, str]:
    """Ask macOS's ``sysctl`` for ``keys`` in one call; unknown keys are left out."""
    try:
        proc = subprocess.run(
            ["/usr/sbin/sysctl", *keys],
            capture_output=True,
            text=True,
            timeout=SYSCTL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("sysctl failed: %s", exc)
        return {}
    # sysctl exits non-zero when any key is unknown but still prints the known ones.
    return parse_sysctl_output(proc.stdout)


def features_from_sysctl(values: Mapping[str, str]) -> tuple[str, ...]:
    """Features from macOS ``sysctl`` values (``hw.optional.*`` and ``machdep.cpu.*``)."""
    found: list[str] = []
    for key, feature in _MAC_OPTIONAL_KEYS.items():
        if values.get(key, "").strip() == "1":
            found.append(feature)
    for key in ("machdep.cpu.features", "machdep.cpu.leaf7_features"):
        for token in values.get(key, "").split():
            cpuid_feature = _MAC_CPUID_TOKENS.get(token.upper())
            if cpuid_feature:
                found.append(cpuid_feature)
    return order_features(found)


def features_from_windows(is_present: Callable[[int], bool], arch: str) -> tuple[str, ...]:
    """Features from Windows' ``IsProcessorFeaturePresent`` (``is_present(PF_number)``)."""
    table = _WINDOWS_ARM_FEATURES if arch == "arm64" else _WINDOWS_X86_FEATURES
    return order_features(f for pf, f in table.items() if is_present(pf))


def normalize_arch(machine: str) -> str:
    """One spelling per architecture: ``x86_64`` (for AMD64) and ``arm64`` (for aarch64)."""
    m = machine.strip().lower()
    if m in ("amd64", "x86_64", "x64", "em64t"):
        return "x86_64"
    if m in ("aarch64", "arm64", "armv8l", "arm64e"):
        return "arm64"
    return m or "unknown"


def _windows_is_present() -> Callable[[int], bool] | None:
    try:
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32")  # type: ignore[attr-defined,unused-ignore]
        fn = kernel32.IsProcessorFeaturePresent
    except (ImportError, OSError, AttributeError):
        return None

    def is_present(feature: int) -> bool:
        return bool(fn(feature))

    return is_present


def probe_cpu(
    *,
    system: str | None = None,
    machine: str | None = None,
    read_cpuinfo: Callable[[], str] | None = None,
    sysctl: SysctlRunner | None = None,
    is_feature_present: Callable[[int], bool] | None = None,
) -> tuple[CpuInfo, tuple[str, ...]]:
    """Describe this machine's CPU; return it with notes on anything not found.

    Every OS hook is injectable so the same code runs on saved samples.
    """
    system = system or platform.system()
    arch = normalize_arch(machine if machine is not None else platform.machine())
    notes: list[str] = []
    brand: str | None = None
    features: tuple[str, ...] = ()
    source = "unknown"

    if system == "Linux":
        reader = read_cpuinfo or (lambda: Path("/proc/cpuinfo").read_text(errors="replace"))
        try:
            facts = parse_proc_cpuinfo(reader())
        except OSError as exc:
            notes.append(f"/proc/cpuinfo could not be read ({exc}); CPU features unknown")
        else:
            brand = facts.brand
            if facts.feature_line is not None:
                features, source = facts.features, "/proc/cpuinfo"
            else:
                notes.append("/proc/cpuinfo lists no CPU flags; CPU features unknown")
    elif system == "Darwin":
        values = (sysctl or run_sysctl)(MAC_CPU_SYSCTL_KEYS)
        brand = values.get("machdep.cpu.brand_string") or None
        if values:
            features, source = features_from_sysctl(values), "sysctl"
            if values.get("hw.optional.arm64") == "1":
                arch = "arm64"
        else:
            notes.append("sysctl gave no CPU facts; CPU features unknown")
    elif system == "Windows":
        present = is_feature_present or _windows_is_present()
        if present is None:
            notes.append("IsProcessorFeaturePresent is unavailable; CPU features unknown")
        else:
            features, source = features_from_windows(present, arch), "IsProcessorFeaturePresent"
            if arch == "x86_64":
                notes.append(
                    "Windows reports AVX/AVX2/AVX-512F only; FMA, F16C and "
                    "AVX-512 extensions were not checked"
                )
        brand = platform.processor() or None
    else:
        notes.append(f"CPU features are not probed on {system}; treated as unknown")

    if not brand:
        brand = platform.processor() or "unknown CPU"

    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False)
    if not physical:
        physical = logical
        notes.append(f"physical core count unavailable; assumed {physical} (the logical count)")
    cpu = CpuInfo(
        brand=_clean_brand(brand),
        arch=arch,
        physical_cores=int(physical),
        logical_cores=int(logical),
        features=features,
        features_source=source,
    )
    return cpu, tuple(notes)


def _clean_brand(brand: str) -> str:
    return re.sub(r"\s+", " ", brand).strip()
