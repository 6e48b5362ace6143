#!/bin/sh
# deps.sh - install the Debian 12 packages libcolt5 builds, tests and runs with
# (fortunes: the main job's default text; gnuplot-nox: jobs/plot-loss.sh;
# python3-h5py: tests/unit/test_load_checkpoint.sh checks a checkpoint with
# tools/load_checkpoint.py). Benchmarks against the PyTorch reference also need
# python3-torch and python3-packaging: `jobs/deps.sh --reference`.
set -eu
pkgs="build-essential autoconf automake libtool autoconf-archive pkg-config make
      libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools libopenblas-dev libopenblas-openmp-dev
      libjansson-dev libsleef-dev python3-h5py fortunes gnuplot-nox"
[ "${1:-}" = "--reference" ] && pkgs="$pkgs python3-torch python3-packaging python3-numpy"
SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# clang-14, libclang-rt-14-dev (libFuzzer, the sanitizers' clang runtimes) and libomp-14-dev (OpenMP
# under clang): jobs/fuzz.sh's harnesses; valgrind: jobs/valgrind.sh and tests/unit/test_valgrind.sh.
pkgs="$pkgs clang-14 libclang-rt-14-dev libomp-14-dev valgrind"
# slurm-wlm and munge: tests/unit/test_slurm.sh starts a one-node cluster of its
# own to run jobs/slurm/*.sbatch (the packages' own services stay unused).
pkgs="$pkgs slurm-wlm munge"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends $pkgs > /dev/null
