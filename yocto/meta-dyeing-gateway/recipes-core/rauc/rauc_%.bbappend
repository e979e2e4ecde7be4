# Only root may install a bundle or mark a slot over D-Bus: meta-rauc's policy, like Debian's,
# lets any user call RAUC. Reading the status stays open (the gateway's status page). The same
# file as the Debian image's (image/rauc/), in /etc so that it is read after the package's.
FILESEXTRAPATHS:prepend:dyeing-gateway := "${THISDIR}/files:"
SRC_URI:append:dyeing-gateway = " file://de.pengutronix.rauc-installer.conf"

do_install:append:dyeing-gateway() {
    install -D -m 0644 ${WORKDIR}/de.pengutronix.rauc-installer.conf \
        ${D}${sysconfdir}/dbus-1/system.d/de.pengutronix.rauc-installer.conf
}

FILES:${PN}-service:append:dyeing-gateway = " ${sysconfdir}/dbus-1/system.d/de.pengutronix.rauc-installer.conf"
