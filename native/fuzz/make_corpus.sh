#!/usr/bin/env bash
# Regenerate the fuzz seed corpus: small valid images (4 KiB clusters) covering snapshots,
# fine-grained entries, a base reference, stripes, plus corrupt variants.
# regress-*.img files in the corpus are fuzzer findings kept by hand (not regenerated).
# Usage: fuzz/make_corpus.sh path/to/pcow-img OUTDIR
set -euo pipefail
IMG=$1
OUT=$2
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$OUT"
cd "$W"
head -c 9000 /dev/urandom > d1
head -c 3000 /dev/urandom > d2
"$IMG" create -c 4K empty.img 1M >/dev/null
"$IMG" create -c 4K data.img 1M >/dev/null
"$IMG" write data.img 0 d1 && "$IMG" write data.img 500000 d2
"$IMG" create -c 4K snap.img 256K >/dev/null
"$IMG" write snap.img 0 d1 && "$IMG" snapshot -c one snap.img && "$IMG" write snap.img 4096 d2
"$IMG" snapshot -c two snap.img && "$IMG" snapshot -a one snap.img
"$IMG" create -c 8K -s 4K fine.img 256K >/dev/null
"$IMG" write fine.img 0 d1 && "$IMG" snapshot -c s fine.img
# bitmap records (forced at 8 KiB clusters so the image stays small): partial entries whose
# word 1 addresses a 64-byte record in a bitmap cluster
"$IMG" create -c 8K -s 4K --bitmap-records records.img 256K >/dev/null
"$IMG" write records.img 0 d1 && "$IMG" snapshot -c s records.img
"$IMG" write --fine records.img 100 d2 && "$IMG" write --fine records.img 20000 d2
head -c 65536 /dev/zero > base.raw
"$IMG" create -c 4K -b base.raw -F raw based.img >/dev/null
"$IMG" create -c 4K --stripes 2 --stripe-unit 4K striped.img 128K >/dev/null
for f in empty data snap fine records based striped; do cp "$f.img" "$OUT/valid-$f.img"; done
# corrupt variants of data.img
cp data.img c; printf '\xff' | dd of=c bs=1 seek=70 conv=notrunc status=none; cp c "$OUT/bad-slot0.img"
cp data.img c; truncate -s 10000 c; cp c "$OUT/bad-truncated.img"
cp data.img c; printf '\x00\x00\x00\x40' | dd of=c bs=1 seek=$((3 * 4096)) conv=notrunc status=none; cp c "$OUT/bad-cluster3.img"
cp data.img c; head -c 4096 /dev/urandom | dd of=c bs=4096 seek=2 conv=notrunc status=none; cp c "$OUT/bad-l1.img"
head -c 4096 data.img > "$OUT/bad-header-only.img"
# header verdicts (issue 8): magic + zeros; an unaligned tail; a non-zero header cluster tail
# (8 KiB clusters); slot 1 re-encoded with a field changed (same generation) or as version 2
# with a higher generation, checksums right
{ printf '\x89PCOW\r\n\x1a'; head -c 8184 /dev/zero; } > "$OUT/bad-magic-zeros.img"
cp data.img c; head -c 100 /dev/urandom >> c; cp c "$OUT/bad-unaligned-tail.img"
"$IMG" create -c 8K ht.img 256K >/dev/null; "$IMG" write ht.img 0 d2
cp ht.img c; printf '\x01' | dd of=c bs=1 seek=5000 conv=notrunc status=none; cp c "$OUT/bad-header-tail.img"
# reslot FILE OFFSET PACKED-VALUE-HEX: overwrite bytes of slot 1 and recompute its CRC32C
reslot() {
  perl -e '
    open(my $f, "+<", $ARGV[0]) or die; binmode $f; seek($f, 2048, 0); read($f, my $h, 2048) == 2048 or die;
    substr($h, $ARGV[1], length(pack("H*", $ARGV[2]))) = pack("H*", $ARGV[2]); substr($h, 16, 4) = "\0" x 4;
    my $c = 0xffffffff;
    for my $b (unpack("C*", $h)) { $c ^= $b; for (1 .. 8) { $c = ($c >> 1) ^ (($c & 1) ? 0x82F63B78 : 0) } }
    substr($h, 16, 4) = pack("V", $c ^ 0xffffffff); seek($f, 2048, 0); print $f $h; close $f;' "$@"
}
cp data.img c; reslot c 64 0000200000000000; cp c "$OUT/bad-equal-generation.img"
cp data.img c; reslot c 8 02000000; reslot c 24 ffff000000000000; cp c "$OUT/newer-version-slot1.img"
ls "$OUT" | wc -l
