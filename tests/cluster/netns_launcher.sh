#!/bin/sh
# Hydra's "ssh" launcher for the virtual cluster: `netns_launcher.sh [-x] HOST COMMAND...`.
# Runs COMMAND inside the network namespace of HOST (10.200.0.N is node N), with its own
# hostname (nodeN), as ssh would run it on that machine.
while [ "${1#-}" != "$1" ]; do shift; done
host=$1
shift
node=node${host##*.}
exec ip netns exec "${DISTNN_VC_PREFIX:?}-$node" unshare --uts sh -c "hostname $node && $*"
