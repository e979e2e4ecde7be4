SUMMARY = "Read-only Raspberry Pi image running dyeing-gateway"
DESCRIPTION = "A read-only root with systemd, the dyeing-gateway service and a writable \
data partition for its state, its configuration and the journal."
LICENSE = "MIT"

inherit core-image

IMAGE_FEATURES += "read-only-rootfs"
IMAGE_INSTALL += "dyeing-gateway dyeing-gateway-system rauc libubootenv-bin \
    kernel-image kernel-devicetree"

# wic: the SD card (boot, root A, root B, data); ext4: the root slot's content for the
# RAUC bundle (dyeing-gateway-bundle).
IMAGE_FSTYPES = "wic.bz2 wic.bmap ext4"
WKS_FILE = "dyeing-gateway.wks"
# Half of a root slot (wic/dyeing-gateway.wks): an update can double the root and still fit.
IMAGE_ROOTFS_MAXSIZE = "524288"

# The RS-485 UART carries Modbus: no kernel console and no getty on it.
SERIAL_CONSOLES = ""

# The state directory and the journal live on the data partition (bind mounts).
ROOTFS_POSTPROCESS_COMMAND += "dyeing_gateway_mounts;"

dyeing_gateway_mounts() {
    install -d ${IMAGE_ROOTFS}/data ${IMAGE_ROOTFS}/boot/firmware \
        ${IMAGE_ROOTFS}${localstatedir}/lib/dyeing-gateway \
        ${IMAGE_ROOTFS}${localstatedir}/log/journal
    cat ${IMAGE_ROOTFS}${datadir}/dyeing-gateway/fstab >> ${IMAGE_ROOTFS}${sysconfdir}/fstab
}
