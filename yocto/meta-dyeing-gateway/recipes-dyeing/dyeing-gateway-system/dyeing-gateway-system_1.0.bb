SUMMARY = "System settings of the dyeing-gateway appliance"
DESCRIPTION = "Journal size limit, hardware watchdog, NTP servers, the data partition \
mounts and the writable configuration of the read-only dyeing-gateway image, and the \
first-boot service that grows the data partition and takes the config from the boot partition."
HOMEPAGE = "https://github.com/dyeing-gateway/dyeing-gateway"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=bf6cd287803f19e50539cd9747daf82a"

SRC_URI = "\
    file://LICENSE \
    file://journald-size.conf \
    file://watchdog.conf \
    file://timesyncd-ntp.conf \
    file://dyeing-gateway-data.conf \
    file://dyeing-gateway.fstab \
    file://dyeing-gateway-firstboot \
    file://dyeing-gateway-firstboot.service \
    file://rauc-data.conf \
"

S = "${UNPACKDIR}"

inherit allarch systemd

SYSTEMD_SERVICE:${PN} = "dyeing-gateway-firstboot.service"

# NTP servers of the plant (space separated); set in local.conf or the kas file.
DYEING_NTP_SERVERS ??= "pool.ntp.org"

do_install() {
    install -d ${D}${systemd_unitdir}/journald.conf.d ${D}${systemd_unitdir}/system.conf.d \
        ${D}${systemd_unitdir}/timesyncd.conf.d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/journald-size.conf ${D}${systemd_unitdir}/journald.conf.d/50-dyeing-gateway.conf
    install -m 0644 ${S}/watchdog.conf ${D}${systemd_unitdir}/system.conf.d/50-dyeing-gateway.conf
    sed -e 's|@NTP@|${DYEING_NTP_SERVERS}|' ${S}/timesyncd-ntp.conf \
        > ${D}${systemd_unitdir}/timesyncd.conf.d/50-dyeing-gateway.conf
    chmod 0644 ${D}${systemd_unitdir}/timesyncd.conf.d/50-dyeing-gateway.conf
    install -m 0644 ${S}/dyeing-gateway-data.conf ${D}${nonarch_libdir}/tmpfiles.d/dyeing-gateway-data.conf
    install -d ${D}${datadir}/dyeing-gateway
    install -m 0644 ${S}/dyeing-gateway.fstab ${D}${datadir}/dyeing-gateway/fstab
    # The config lives on the data partition; /etc only points at it.
    install -d ${D}${sysconfdir}
    ln -sf /data/config/machines.json ${D}${sysconfdir}/machines.json
    # First boot (and every boot): grow the data partition once, move machines.json and the
    # env file put on the FAT partition from a laptop to /data/config.
    install -d ${D}${libexecdir} ${D}${systemd_system_unitdir}/rauc.service.d
    install -m 0755 ${S}/dyeing-gateway-firstboot ${D}${libexecdir}/dyeing-gateway-firstboot
    install -m 0644 ${S}/dyeing-gateway-firstboot.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/rauc-data.conf ${D}${systemd_system_unitdir}/rauc.service.d/50-dyeing-gateway.conf
}

FILES:${PN} += "${systemd_unitdir} ${nonarch_libdir}/tmpfiles.d ${sysconfdir}/machines.json"
RDEPENDS:${PN} = "dyeing-gateway e2fsprogs-resize2fs util-linux-findmnt util-linux-partx util-linux-sfdisk"
