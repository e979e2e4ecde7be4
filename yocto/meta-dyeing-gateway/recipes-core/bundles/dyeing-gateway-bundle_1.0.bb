SUMMARY = "Signed RAUC bundle of the dyeing-gateway image"
DESCRIPTION = "The root filesystem of dyeing-gateway-image as a verity RAUC bundle for \
the root slots of the SD card, installed with rauc install."
HOMEPAGE = "https://github.com/dyeing-gateway/dyeing-gateway"
LICENSE = "MIT"

# Everything comes from the image; the bundle class adds its own files.
SRC_URI = ""

inherit bundle

# Not the Debian image's compatible: the two roots boot differently (this one's boot script
# loads /boot/zImage), so a bundle of one is refused by the other.
RAUC_BUNDLE_COMPATIBLE = "dyeing-gateway-rpi-armhf-yocto"
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
RAUC_BUNDLE_DESCRIPTION = "dyeing-gateway root filesystem"
RAUC_BUNDLE_FORMAT = "verity"

RAUC_BUNDLE_SLOTS = "rootfs"
RAUC_SLOT_rootfs = "dyeing-gateway-image"
RAUC_SLOT_rootfs[fstype] = "ext4"

# The signing key and its certificate, outside the layer (a plant uses its own; see the
# layer's README). The image's keyring (rauc-conf) holds the CA that issued the certificate.
DYEING_RAUC_KEYS ??= "${TOPDIR}/rauc-keys"
RAUC_KEY_FILE ?= "${DYEING_RAUC_KEYS}/signing.key.pem"
RAUC_CERT_FILE ?= "${DYEING_RAUC_KEYS}/signing.cert.pem"
