#!/bin/sh
# Runs an agent image with corkd baked in as a smolvm machine whose workload
# is corkd listening on a unix socket, and exposes that socket on the host:
#
#   images/smolvm/corkd-machine.sh IMAGE NAME [HOST_SOCKET]
#   cork exec --connect unix://HOST_SOCKET -it -u node -- claude
#
# IMAGE is an image reference or `-` for a `docker save` stream on stdin:
#   docker save myagent | cork bake - - | images/smolvm/corkd-machine.sh - bottle
#
# smolvm cannot run on cork's test machines, so this script is not run by
# the tests; its flags are smolvm's documented ones (--image, --name,
# --expose-socket GUEST_PATH:HOST_PATH). Note that smolvm refuses to
# checkpoint a machine with an exposed socket: for machines you checkpoint,
# use `cork exec --machine NAME`, which needs nothing running or exposed.
set -eu
image=$1 name=$2
sock=${3:-$HOME/.cork/$name.sock}
mkdir -p "$(dirname "$sock")"
exec smolvm machine run --name "$name" --image "$image" \
	--expose-socket "/run/corkd.sock:$sock" \
	-- /usr/local/bin/corkd serve --listen unix:///run/corkd.sock
