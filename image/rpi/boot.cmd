# U-Boot script of the dyeing-gateway SD image (boot.scr on the FAT partition; built by
# image/build with mkimage). A/B boot counting for RAUC's U-Boot backend:
#   BOOT_ORDER   slots by preference, "A B" or "B A" (RAUC reorders it on install)
#   BOOT_A_LEFT  tries left for slot A; this script takes one before booting it, the gateway's
#   BOOT_B_LEFT  health check gives them back (rauc status mark-good) once the slot is healthy
# A slot with no tries left is skipped; when none has any, the tries are reset and the board
# restarts. Slot A is partition 2, slot B partition 3 (ext4, read-only; kernel, initramfs and
# device trees are in the slot's /boot, so they change with the update and roll back with it).
#
# Board-agnostic: ${devtype} ${devnum} are the device distro_bootcmd found this script on
# (mmc 0 on the Pi, virtio 0 on qemu's virt board). The environment is the FAT file uboot.env
# (16 KiB, CONFIG_ENV_SIZE of Debian's rpi builds), which Linux edits with fw_setenv. The Pi's
# U-Boot keeps its environment there (saveenv); on boards that keep it elsewhere the script
# reads and writes that file itself.

test -n "${devtype}" || setenv devtype mmc
test -n "${devnum}" || setenv devnum 0
# Kept apart: on boards where the FAT file is imported below, it may carry other values.
setenv dg_devtype ${devtype}
setenv dg_devnum ${devnum}
setenv dg_env_size 0x4000

# This board's load addresses and device tree name, before the file's variables are imported.
setenv dg_kernel ${kernel_addr_r}
setenv dg_initrd ${ramdisk_addr_r}
setenv dg_fdt ${fdt_addr_r}
setenv dg_fdtfile ${fdtfile}
setenv dg_fdtctl ${fdtcontroladdr}
if test "${dg_devtype}" = "mmc"; then
  setenv dg_saveenv saveenv
  setenv dg_rootdev /dev/mmcblk0p
  setenv dg_console "console=ttyS1,115200 console=tty1"
else
  # Not the Pi: import the boot counters from the FAT file, write the file back below. A card
  # the Pi booted holds the Pi's whole environment there (its saveenv saves everything, this
  # script's dg_ variables and the Pi's addresses too): this board's values are kept across
  # the import under names only this branch sets, then set again.
  setenv dgv_devtype ${dg_devtype}
  setenv dgv_devnum ${dg_devnum}
  setenv dgv_kernel ${dg_kernel}
  setenv dgv_initrd ${dg_initrd}
  setenv dgv_fdt ${dg_fdt}
  setenv dgv_fdtfile ${dg_fdtfile}
  setenv dgv_fdtctl ${dg_fdtctl}
  if load ${dgv_devtype} ${dgv_devnum}:1 ${dgv_initrd} uboot.env; then
    env import -c ${dgv_initrd} 0x4000
  fi
  setenv dg_devtype ${dgv_devtype}
  setenv dg_devnum ${dgv_devnum}
  setenv dg_kernel ${dgv_kernel}
  setenv dg_initrd ${dgv_initrd}
  setenv dg_fdt ${dgv_fdt}
  setenv dg_fdtfile ${dgv_fdtfile}
  setenv dg_fdtctl ${dgv_fdtctl}
  setenv dg_env_size 0x4000
  setenv dg_saveenv "env export -c -s ${dg_env_size} ${dg_initrd}; fatwrite ${dg_devtype} ${dg_devnum}:1 ${dg_initrd} uboot.env ${dg_env_size}"
  setenv dg_rootdev /dev/vda
  setenv dg_console "console=ttyAMA0,115200"
fi

test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

setenv dg_slot
for BOOT_SLOT in "${BOOT_ORDER}"; do
  if test -z "${dg_slot}" && test "x${BOOT_SLOT}" = "xA" && test ${BOOT_A_LEFT} -gt 0; then
    setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
    echo "dyeing-gateway: slot A, ${BOOT_A_LEFT} tries left after this one"
    setenv dg_slot A
    setenv dg_part 2
  fi
  if test -z "${dg_slot}" && test "x${BOOT_SLOT}" = "xB" && test ${BOOT_B_LEFT} -gt 0; then
    setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
    echo "dyeing-gateway: slot B, ${BOOT_B_LEFT} tries left after this one"
    setenv dg_slot B
    setenv dg_part 3
  fi
done

if test -z "${dg_slot}"; then
  echo "dyeing-gateway: no slot has tries left; giving each 3 again and restarting"
  setenv BOOT_A_LEFT 3
  setenv BOOT_B_LEFT 3
  run dg_saveenv
  reset
fi
# The try is counted before anything is loaded: a slot that cannot even be loaded uses it up.
run dg_saveenv

setenv dg_src "${dg_devtype} ${dg_devnum}:${dg_part}"
if load ${dg_src} ${dg_kernel} /boot/vmlinuz && load ${dg_src} ${dg_initrd} /boot/initrd.img; then
  setenv dg_initrd_size ${filesize}
  if test -n "${dg_fdtfile}" && load ${dg_src} ${dg_fdt} /boot/dtbs/${dg_fdtfile}; then
    echo "dyeing-gateway: device tree ${dg_fdtfile}"
    # The mini UART is the kernel's serial console (ttyS1): the PL011 is the RS-485 port. The
    # 2B's tree has it disabled and without pins (so enabling it takes nothing from the PL011).
    fdt addr ${dg_fdt}
    fdt resize 1024
    fdt set /soc/serial@7e215040 status okay
  else
    # qemu's virt board: the device tree qemu made (U-Boot's own).
    setenv dg_fdt ${dg_fdtctl}
  fi
  setenv bootargs "root=${dg_rootdev}${dg_part} rootfstype=ext4 ro rootwait rauc.slot=${dg_slot} ${dg_console} panic=5 loglevel=4"
  bootz ${dg_kernel} ${dg_initrd}:${dg_initrd_size} ${dg_fdt}
fi
echo "dyeing-gateway: slot ${dg_slot} does not boot; restarting (its tries count down)"
reset
