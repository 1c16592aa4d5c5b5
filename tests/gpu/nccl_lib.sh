# Sourced by run.sh and on_lent_machine.sh: NCCL for the samples where the loader
# finds none (the toolkit has it; a GPU machine with only PyTorch has the Python
# package nvidia-nccl-cu*, whose lib/ is added to LD_LIBRARY_PATH).
if ! ldconfig -p 2> /dev/null | grep -q 'libnccl\.so\.2 '; then
  nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2> /dev/null)
  [ -n "$nccl_lib" ] && [ -d "$nccl_lib" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$nccl_lib"
fi
