"""``quantdesk hw``: the hardware profile of this machine (or of a saved one)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from app.core.commands.common import TEXT_LIMIT, human_bytes, print_json
from quant.hardware.profile import HardwareProfile
from quant.untrusted import terminal_text

logger = logging.getLogger(__name__)

_LABEL_WIDTH = 11


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "hw",
        help="show this machine's hardware profile",
        description="Probe CPU, memory, GPUs, Apple Silicon and the llama.cpp runtime. "
        "Save --json output to plan for this machine elsewhere with --hardware FILE.",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the profile as JSON (the --hardware format)"
    )
    parser.add_argument(
        "--no-bandwidth",
        action="store_true",
        help="skip the memory bandwidth measurement (and its cached value)",
    )
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="measure memory bandwidth again instead of using the figure cached for 30 days",
    )
    parser.add_argument(
        "--hardware",
        metavar="FILE",
        help="show the profile saved in FILE (from 'quantdesk hw --json') instead of probing",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "hardware", None):
        profile = HardwareProfile.load(args.hardware)
    else:
        from quant.hardware.probe import probe

        profile = probe(measure_bandwidth=not args.no_bandwidth, use_cache=not args.remeasure)
    if args.json:
        print_json(profile.to_dict())
    else:
        print(format_profile(profile))
    return 0


def format_profile(profile: HardwareProfile) -> str:
    """The profile as a two-column table for a terminal."""
    rows: list[tuple[str, str]] = []
    cpu = profile.cpu
    rows.append(
        (
            "CPU",
            f"{cpu.brand} ({cpu.arch}), {cpu.physical_cores} cores / {cpu.logical_cores} threads",
        )
    )
    if cpu.features:
        rows.append(("  features", f"{' '.join(cpu.features)}  [{cpu.features_source}]"))
    else:
        rows.append(("  features", f"unknown  [{cpu.features_source}]"))

    mem = profile.memory
    rows.append(
        (
            "RAM",
            f"{human_bytes(mem.total_bytes)} total, {human_bytes(mem.available_bytes)} available",
        )
    )
    if mem.swap_total_bytes > 0:
        rows.append(
            (
                "Swap",
                f"{human_bytes(mem.swap_total_bytes)} total, "
                f"{human_bytes(mem.swap_free_bytes)} free",
            )
        )
    else:
        rows.append(("Swap", "none"))

    if not profile.gpus:
        rows.append(("GPU", "none found"))
    for gpu in profile.gpus:
        parts = [
            f"{human_bytes(gpu.memory_total_bytes)} VRAM "
            f"({human_bytes(gpu.memory_free_bytes)} free)"
        ]
        if gpu.compute_capability:
            parts.append(f"compute capability {gpu.compute_capability}")
        if gpu.memory_bandwidth_gbps is not None:
            parts.append(f"{gpu.memory_bandwidth_gbps:g} GB/s")
        if gpu.driver_version:
            parts.append(f"driver {gpu.driver_version}")
        if gpu.cuda_version:
            parts.append(f"CUDA {gpu.cuda_version}")
        rows.append((f"GPU {gpu.index}", f"{gpu.name}: {', '.join(parts)}"))

    if profile.apple is not None:
        apple = profile.apple
        limit = "default limit" if apple.working_set_estimated else "iogpu.wired_limit_mb"
        bw = (
            f", {apple.memory_bandwidth_gbps:g} GB/s"
            if apple.memory_bandwidth_gbps is not None
            else ""
        )
        rows.append(
            (
                "Apple",
                f"{apple.chip}: {human_bytes(apple.unified_memory_bytes)} unified, "
                f"GPU working set {human_bytes(apple.gpu_working_set_bytes)} ({limit}){bw}",
            )
        )

    runtime = profile.runtime
    if runtime.llama_cpp_version:
        offload = "yes" if runtime.supports_gpu_offload else "no"
        rows.append(
            (
                "Runtime",
                f"llama-cpp-python {runtime.llama_cpp_version}, GPU offload: {offload}",
            )
        )
    else:
        rows.append(("Runtime", "llama-cpp-python not found"))
    rows.append(("  backends", ", ".join(profile.backends)))
    if runtime.devices:
        rows.append(("  devices", ", ".join(runtime.devices)))

    if profile.measured_bandwidth_gbps is not None:
        rows.append(("Bandwidth", f"{profile.measured_bandwidth_gbps:g} GB/s measured (RAM read)"))
    else:
        rows.append(("Bandwidth", "not measured"))

    if profile.source not in ("probe", ""):
        rows.append(("Source", profile.source))

    # Names in a profile come from the system or from a saved file (--hardware FILE).
    lines = [f"{label:<{_LABEL_WIDTH}}{terminal_text(value, TEXT_LIMIT)}" for label, value in rows]
    if profile.notes:
        lines.append("Notes")
        lines.extend(f"  - {terminal_text(note, TEXT_LIMIT)}" for note in profile.notes)
    return "\n".join(lines)
