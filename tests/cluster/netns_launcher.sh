#!/bin/sh
# The "ssh" of the virtual cluster (Hydra's -launcher-exec, Open MPI's plm_rsh_agent):
# `netns_launcher.sh [-x] HOST COMMAND...` runs COMMAND inside the network namespace of
# HOST (nodeN, or its address 10.200.0.N), with its own hostname, as ssh would run it there.
while [ "${1#-}" != "$1" ]; do shift; done
host=$1
shift
case $host in
  node*) node=$host ;;
  *) node=node${host##*.} ;;
esac
exec ip netns exec "${DISTNN_VC_PREFIX:?}-$node" unshare --uts sh -c "hostname $node && $*"
