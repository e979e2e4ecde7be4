# RAUC's system.conf for the dyeing-gateway image, and its keyring: only the certificate that
# signs bundles (the plant's CA, or the development one), taken from DYEING_RAUC_KEYS outside
# the layer (see conf/distro/dyeing-gateway.conf); the signing key never enters the image.
FILESEXTRAPATHS:prepend:dyeing-gateway := "${THISDIR}/files:${DYEING_RAUC_KEYS}:"

RAUC_KEYRING_FILE:dyeing-gateway = "keyring.pem"
