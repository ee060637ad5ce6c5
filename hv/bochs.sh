#!/usr/bin/env bash
# Boot an x86 hypervisor ELF (multiboot2) on Bochs, headless, and print its COM1 output.
#   hv/bochs.sh KERNEL CPU_MODEL OUTDIR      e.g. hv/bochs.sh .../hv-vmx corei7_skylake_x target/bochs
# Bochs 2.7 as Debian builds it has no "nogui" display and stops in its debugger first: SDL2 with
# a dummy video driver, dummy sound, and "c" from an rc file get past both. Its exit status is
# always 1; the verdict is the RESULT line on the console.
set -uo pipefail
kernel="$1"; model="$2"; out="$3"
mkdir -p "$out/iso/boot/grub"
cp "$kernel" "$out/iso/boot/kernel"
cat >"$out/iso/boot/grub/grub.cfg" <<'CFG'
set timeout=0
set default=0
menuentry "hv" {
  multiboot2 /boot/kernel
  boot
}
CFG
grub-mkrescue -o "$out/hv.iso" "$out/iso" >"$out/grub-mkrescue.log" 2>&1 || { cat "$out/grub-mkrescue.log"; exit 1; }
cat >"$out/bochsrc" <<RC
megs: 2048
cpu: model=$model, count=1, ips=200000000, reset_on_triple_fault=0
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
ata0-master: type=cdrom, path=$out/hv.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$out/serial.log
display_library: sdl2
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
speaker: enabled=0
log: $out/bochs.log
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
RC
echo c >"$out/cont.rc"
rm -f "$out/serial.log"
SDL_VIDEODRIVER=dummy timeout 600 bochs -q -f "$out/bochsrc" -rc "$out/cont.rc" >"$out/bochs.out" 2>&1 </dev/null
tr -d '\r' <"$out/serial.log" 2>/dev/null
