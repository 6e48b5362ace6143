# cuda_app.sh - sourced by the GPU tests that run an app under mpirun
# (test_cuda_train_mpi.sh, test_cuda_bench_block.sh), from beside them:
#   . "$(dirname "$0")/cuda_app.sh"; cuda_app colt5-train
# sets app (the program), mpx (mpirun's -x for a staged library), tmp (a
# folder removed at exit) and fail=0, and exits 77 without the program or
# in a build without CUDA kernels. Staged (bench/cuda_gpu_run.sh, this file
# beside the scripts): T_CUDA_DIR holds the program and the libcolt5.so it
# loads; else the build tree's apps/.
cuda_app() {
  mpx=
  if [ -n "${T_CUDA_DIR:-}" ]; then
    app=$T_CUDA_DIR/$1
    export LD_LIBRARY_PATH="$T_CUDA_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    mpx="-x LD_LIBRARY_PATH"
  else
    app=${top_builddir:-.}/apps/$1
  fi
  [ -x "$app" ] || { echo "no $app"; exit 77; }
  if "$app" --version | grep -q "CUDA kernels no"; then echo "this build has no CUDA kernels"; exit 77; fi
  export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
  export OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  fail=0
}
