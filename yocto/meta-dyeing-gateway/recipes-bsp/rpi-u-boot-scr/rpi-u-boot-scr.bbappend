# The A/B boot script (boot.scr on the FAT partition) replaces meta-raspberrypi's: the same
# boot counting as the Debian image's image/rpi/boot.cmd, for RAUC's U-Boot backend.
FILESEXTRAPATHS:prepend:dyeing-gateway := "${THISDIR}/files:"
