#!/usr/bin/env bash
# Build and boot the slat hypervisors in hv/ on emulated CPUs; print every check and one line per
# architecture. Exit status 0 only if every hypervisor that ran passed and the x86 one ran.
#
#   hv/run.sh [-q] [x86] [arm64] [riscv] [ept] [bochs-npt]     (default: all)
#   HV_INJECT=bad-encoding hv/run.sh         every hypervisor built with a deliberate bug:
#                                            bad-encoding (one bit dropped from every leaf) or
#                                            drop-flush (the Tlb never invalidates), or shift-flush
#                                            (the arm64 Tlb invalidates the leaf after each one slat
#                                            reports); the run must fail
#   -q: print only failing checks and the summary.
set -uo pipefail
cd "$(dirname "$0")"

quiet=0
archs=()
for a in "$@"; do
  case "$a" in
    -q) quiet=1 ;;
    x86|arm64|riscv|ept|bochs-npt) archs+=("$a") ;;
    *) echo "usage: $0 [-q] [x86] [arm64] [riscv] [ept] [bochs-npt]" >&2; exit 2 ;;
  esac
done
[ ${#archs[@]} -eq 0 ] && archs=(x86 arm64 riscv ept bochs-npt)

inject="${HV_INJECT:-}"
features=()
target_dir="target"
logs="$target_dir/logs"
if [ -n "$inject" ]; then
  case "$inject" in
    bad-encoding|drop-flush|shift-flush) ;;
    *) echo "HV_INJECT must be bad-encoding, drop-flush or shift-flush" >&2; exit 2 ;;
  esac
  # Same target directory (only hv-common and the kernels rebuild), separate logs.
  features=(--features "$inject")
  logs="$target_dir/logs-$inject"
fi
export CARGO_TARGET_DIR="$target_dir"
mkdir -p "$logs"

sysroot="$(rustc --print sysroot)"
summary=()
status=0

# arch -> crate, rust target, emulator, emulator arguments
spec() {
  case "$1" in
    x86) crate=hv-svm; triple=x86_64-unknown-linux-gnu; qemu=qemu-system-x86_64; name="x86 AMD SVM + NPT (npt)"
         qargs=(-accel tcg -cpu max -m 2G -nographic -no-reboot -nic none -monitor none -display none
                -device isa-debug-exit,iobase=0xf4,iosize=0x04) ;;
    arm64) crate=hv-arm64; triple=aarch64-unknown-none; qemu=qemu-system-aarch64; name="arm64 EL2 stage 2 (s2-l1/l0)"
         qargs=(-M virt,virtualization=on -cpu max -smp 2 -accel tcg,thread=multi -m 3G -nographic -no-reboot -nic none -monitor none -display none
                -semihosting-config enable=on,target=native) ;;
    ept) crate=hv-vmx; triple=x86_64-unknown-linux-gnu; qemu=bochs; name="x86 Intel VMX + EPT (ept4), Bochs"; model=corei7_skylake_x ;;
    bochs-npt) crate=hv-svm; triple=x86_64-unknown-linux-gnu; qemu=bochs; name="x86 AMD SVM + NPT (npt), Bochs"; model=ryzen ;;
    riscv) crate=hv-riscv; triple=riscv64gc-unknown-none-elf; qemu=qemu-system-riscv64; name="riscv64 H G-stage (sv39x4/sv48x4)"
         qargs=(-M virt -cpu rv64,h=true -bios none -m 3G -nographic -no-reboot -nic none -monitor none -display none) ;;
  esac
}

for arch in "${archs[@]}"; do
  spec "$arch"
  line() { summary+=("$(printf '%-9s %-35s %s' "$arch" "$name" "$1")"); }
  if [ "$qemu" = bochs ] && ! { command -v bochs && command -v grub-mkrescue && command -v xorriso && command -v mformat; } >/dev/null 2>&1; then
    line "SKIP: Bochs or GRUB tools not installed (apt-get install bochs bochsbios vgabios bochs-sdl grub-pc-bin grub-common xorriso mtools)"
    continue
  fi
  if ! command -v "$qemu" >/dev/null 2>&1; then
    line "SKIP: $qemu not installed (apt-get install qemu-system-x86 qemu-system-arm qemu-system-misc)"
    [ "$arch" = x86 ] && status=1
    continue
  fi
  if [ ! -d "$sysroot/lib/rustlib/$triple" ]; then
    line "SKIP: rust target $triple not installed (rustup target add $triple)"
    [ "$arch" = x86 ] && status=1
    continue
  fi
  log="$logs/$arch.log"
  t0=$(date +%s.%N)
  if ! RUSTFLAGS="-C relocation-model=static" cargo build -q --release -p "$crate" --target "$triple" "${features[@]}" 2>"$log.build"; then
    cat "$log.build"
    line "FAIL: build failed"
    status=1
    continue
  fi
  t1=$(date +%s.%N)
  kernel="$target_dir/$triple/release/$crate"
  if [ "$qemu" = bochs ]; then
    ./bochs.sh "$kernel" "$model" "$logs/bochs-$arch" >"$log" 2>&1
    rc=$?
  else
    timeout 300 "$qemu" "${qargs[@]}" -serial stdio -kernel "$kernel" </dev/null >"$log" 2>&1
    rc=$?
  fi
  t2=$(date +%s.%N)
  tr -d '\r' <"$log" | grep -a -E '^\[|^RESULT|^PANIC|^host exception|^hv-' >"$log.clean"
  if [ $quiet -eq 1 ]; then grep -a -E 'FAIL|PANIC|exception' "$log.clean"; else cat "$log.clean"; fi
  result=$(grep -a '^RESULT' "$log.clean" | tail -1)
  passed=$(grep -a -c '\] ok ' "$log.clean")
  failed=$(grep -a -c '\] FAIL ' "$log.clean")
  times=$(awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "build %.0fs, boot+run %.1fs", b - a, c - b }')
  # QEMU exit: x86 isa-debug-exit 33 = pass; arm64 semihosting and riscv sifive_test 0 = pass;
  # Bochs: the console's verdict only (bochs.sh returns the status of the last pipeline step).
  want_rc=0; [ "$arch" = x86 ] && want_rc=33
  if [ $rc -eq $want_rc ] && [[ "$result" == *": PASS"* ]] && [ "$failed" -eq 0 ]; then
    line "PASS  $passed/$((passed + failed)) checks  ($times)"
  else
    line "FAIL  $passed/$((passed + failed)) checks passed, $failed failed, emulator status $rc${result:+, $result}  ($times)"
    status=1
  fi
done

echo
echo "== slat on emulated hardware${inject:+ (injected bug: $inject)}"
printf '%s\n' "${summary[@]}"
exit $status
