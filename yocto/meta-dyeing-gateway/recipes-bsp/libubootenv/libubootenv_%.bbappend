# fw_printenv/fw_setenv (RAUC's U-Boot backend) edit the U-Boot environment: the file
# uboot.env on the FAT boot partition, mounted on /boot/firmware.
FILESEXTRAPATHS:prepend:dyeing-gateway := "${THISDIR}/files:"

SRC_URI:append:dyeing-gateway = " file://fw_env.config"

do_install:append:dyeing-gateway() {
    install -d ${D}${sysconfdir}
    install -m 0644 ${UNPACKDIR}/fw_env.config ${D}${sysconfdir}/fw_env.config
}

FILES:${PN}-bin:append:dyeing-gateway = " ${sysconfdir}/fw_env.config"
