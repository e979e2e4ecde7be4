require dyeing-gateway.inc
require dyeing-gateway-crates.inc

# The source revision shipped; bump with the version below and regenerate the crates file
# (scripts/gen-yocto-crates) in the same commit.
PV = "0.1.0+git"
SRCREV = "0000000000000000000000000000000000000000"
