/* Encoding and validation of the header slots, CRC32C, error helpers. */
#define _GNU_SOURCE
#include "pcow_internal.h"
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

const uint8_t pcow_magic[8] = {0x89, 'P', 'C', 'O', 'W', '\r', '\n', 0x1a};

uint32_t pcow_crc32c(uint32_t crc, const void *buf, size_t len)
{
    /* Bitwise CRC32C (Castagnoli, reflected 0x82F63B78): only metadata is checksummed. */
    const uint8_t *p = buf;
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* Copy src into dst[n]; when it does not fit, keep its start and its end and drop the middle:
 * nested messages ("a.img: base image 'b.img': b.img: base image ...: <reason>") put the
 * outermost file first and the reason last, and both matter more than the chain between. */
void pcow__copyerr(char *dst, size_t n, const char *src)
{
    if (!dst || !n)
        return;
    size_t l = strlen(src);
    if (l < n) {
        memcpy(dst, src, l + 1);
        return;
    }
    static const char mid[] = " [...] ";
    size_t ml = sizeof mid - 1;
    if (n < 2 * ml + 2) {
        snprintf(dst, n, "%s", src);
        return;
    }
    size_t head = (n - 1 - ml) / 4, tail = n - 1 - ml - head;
    memcpy(dst, src, head);
    memcpy(dst + head, mid, ml);
    memcpy(dst + head + ml, src + l - tail, tail);
    dst[n - 1] = 0;
}

int pcow__err(pcow_image *img, int e, const char *fmt, ...)
{
    va_list ap;
    char b[8192];
    int n = snprintf(b, sizeof b, "%s: ", img->path ? img->path : "(image)");
    if (n < 0 || (size_t)n >= sizeof b)
        n = 0;
    va_start(ap, fmt);
    vsnprintf(b + n, sizeof b - (size_t)n, fmt, ap);
    va_end(ap);
    pcow__copyerr(img->err, sizeof img->err, b);
    return e > 0 ? -e : e;
}

/* In strict mode (open) a corruption is an error; while checking it is reported and counted,
 * and the caller skips the bad item (return 1). */
int pcow__corrupt(pcow_image *img, const char *fmt, ...)
{
    va_list ap;
    char msg[4096];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!img->ck)
        return pcow__err(img, EUCLEAN, "%s", msg);
    img->ck->res->corruptions++;
    if (img->ck->msg) {
        char full[8192], cut[1100];
        snprintf(full, sizeof full, "%s: %s", img->path, msg);
        pcow__copyerr(cut, sizeof cut, full);
        img->ck->msg(img->ck->ctx, "corruption", cut);
    }
    return 1;
}

static void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }

/* Field offsets inside a header slot (FORMAT.md "Header"). */
enum {
    H_MAGIC = 0, H_VERSION = 8, H_HDRSIZE = 12, H_CRC = 16, H_SLOT = 20, H_GEN = 24,
    H_INCOMPAT = 32, H_COMPAT = 40, H_FLAGS = 48, H_CBITS = 56, H_SBITS = 60, H_VSIZE = 64,
    H_DIROFF = 72, H_DIRCOUNT = 80, H_DIRCRC = 84, H_ACTIVE = 88, H_NEXTID = 92,
    H_NSTRIPES = 96, H_UBITS = 100, H_BASEFMT = 104, H_BASELEN = 108, H_FIXED_END = 112,
    H_BASE = 256, H_SNAMES = 768, H_SNAME_SIZE = 128, H_SNAMES_END = 768 + 7 * 128
};

void pcow__hdr_encode(const struct hdr *h, int slot, uint8_t *b)
{
    memset(b, 0, HDR_SLOT_SIZE);
    memcpy(b + H_MAGIC, pcow_magic, 8);
    put32(b + H_VERSION, PCOW_VERSION);
    put32(b + H_HDRSIZE, HDR_SLOT_SIZE);
    put32(b + H_SLOT, (uint32_t)slot);
    put64(b + H_GEN, h->gen);
    put64(b + H_INCOMPAT, h->incompat);
    put64(b + H_COMPAT, h->compat);
    put64(b + H_FLAGS, h->flags);
    put32(b + H_CBITS, h->cbits);
    put32(b + H_SBITS, h->sbits);
    put64(b + H_VSIZE, h->vsize);
    put64(b + H_DIROFF, h->dir_off);
    put32(b + H_DIRCOUNT, h->dir_count);
    put32(b + H_DIRCRC, h->dir_crc);
    put32(b + H_ACTIVE, h->active_id);
    put32(b + H_NEXTID, h->next_id);
    put32(b + H_NSTRIPES, h->nstripes);
    put32(b + H_UBITS, h->ubits);
    put32(b + H_BASEFMT, h->base_fmt);
    put32(b + H_BASELEN, h->base_len);
    memcpy(b + H_BASE, h->base, h->base_len);
    for (uint32_t i = 1; i < h->nstripes && i < PCOW_MAX_STRIPES; i++) {
        size_t l = strlen(h->sname[i]);
        b[H_SNAMES + (i - 1) * H_SNAME_SIZE] = (uint8_t)l;
        memcpy(b + H_SNAMES + (i - 1) * H_SNAME_SIZE + 1, h->sname[i], l);
    }
    put32(b + H_CRC, pcow_crc32c(0, b, HDR_SLOT_SIZE));
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

int pcow__check_base_path(const char *p, bool allow_unsafe, char *why, size_t whylen)
{
    size_t n = strlen(p);
    if (n == 0 || n > PCOW_BASE_PATH_MAX) {
        snprintf(why, whylen, "base path length %zu is outside 1..%d", n, PCOW_BASE_PATH_MAX);
        return -ENAMETOOLONG;
    }
    if (allow_unsafe)
        return 0;
    if (p[0] == '/') {
        snprintf(why, whylen, "base path '%s' is absolute (allowed only with --unsafe-base-paths; libpcow: PCOW_OPEN_UNSAFE_BASE)", p);
        return -EPERM;
    }
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l == 2 && s[0] == '.' && s[1] == '.') {
            snprintf(why, whylen, "base path '%s' escapes the image's directory with '..' (allowed only with --unsafe-base-paths; libpcow: PCOW_OPEN_UNSAFE_BASE)", p);
            return -EPERM;
        }
        s += l;
        while (*s == '/')
            s++;
    }
    return 0;
}

/* Name of the header field that holds byte off of a slot (for messages). */
const char *pcow__hdr_field(size_t off)
{
    static const struct { size_t end; const char *name; } f[] = {
        {H_VERSION, "magic"}, {H_HDRSIZE, "version"}, {H_CRC, "header_size"}, {H_SLOT, "header_crc"},
        {H_GEN, "slot_index"}, {H_INCOMPAT, "generation"}, {H_COMPAT, "incompatible_features"},
        {H_FLAGS, "compatible_features"}, {H_CBITS, "flags"}, {H_SBITS, "cluster_bits"}, {H_VSIZE, "subunit_bits"},
        {H_DIROFF, "virtual_size"}, {H_DIRCOUNT, "layer_dir_offset"}, {H_DIRCRC, "layer_dir_count"},
        {H_ACTIVE, "layer_dir_crc"}, {H_NEXTID, "active_layer_id"}, {H_NSTRIPES, "next_layer_id"},
        {H_UBITS, "stripe_count"}, {H_BASEFMT, "stripe_unit_bits"}, {H_BASELEN, "base_format"},
        {H_FIXED_END, "base_path_len"}, {H_BASE, "reserved (112..255)"}, {H_SNAMES, "base_path"},
        {H_SNAMES_END, "stripe names"}, {HDR_SLOT_SIZE, "reserved (1664..2047)"},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (off < f[i].end)
            return f[i].name;
    return "beyond the slot";
}

static int stripe_name_ok(const char *n)
{
    return n[0] && strcmp(n, ".") && strcmp(n, "..") && !strchr(n, '/');
}

/* Decode and validate one header slot. Returns 0, or -EINVAL with the reason in why. */
int pcow__hdr_decode(const uint8_t *b, int slot, struct hdr *h, char *why, size_t wl)
{
    uint8_t tmp[HDR_SLOT_SIZE];
    memset(h, 0, sizeof *h);
    if (memcmp(b, pcow_magic, 8)) {
        snprintf(why, wl, "bad magic (not a pcow image)");
        return -EINVAL;
    }
    uint32_t ver = get32(b + H_VERSION), hsize = get32(b + H_HDRSIZE);
    if (all_zero(b + H_VERSION, HDR_SLOT_SIZE - H_VERSION)) {
        snprintf(why, wl, "the slot holds the magic and nothing else (all %u other bytes are zero)", HDR_SLOT_SIZE - 8);
        return -EINVAL;
    }
    if (ver == 0) {
        snprintf(why, wl, "version field is 0 (damaged: versions start at 1)");
        return -EINVAL;
    }
    /* Every version keeps magic, version, header_size, header_crc, slot_index and generation
     * where version 1 has them (FORMAT.md), so a newer slot can be told from a damaged one. */
    if (hsize < H_GEN + 8 || hsize > HDR_SLOT_SIZE || (ver == PCOW_VERSION && hsize != HDR_SLOT_SIZE)) {
        snprintf(why, wl, "header size %u is not %u", hsize, HDR_SLOT_SIZE);
        return -EINVAL;
    }
    memcpy(tmp, b, hsize);
    memset(tmp + H_CRC, 0, 4);
    uint32_t crc = pcow_crc32c(0, tmp, hsize);
    if (crc != get32(b + H_CRC)) {
        snprintf(why, wl, "header checksum mismatch (stored 0x%08x, computed 0x%08x)", get32(b + H_CRC), crc);
        return -EINVAL;
    }
    if (get32(b + H_SLOT) != (uint32_t)slot) {
        snprintf(why, wl, "slot index %u where %d expected", get32(b + H_SLOT), slot);
        return -EINVAL;
    }
    h->gen = get64(b + H_GEN);
    if (ver != PCOW_VERSION) {
        snprintf(why, wl, "unsupported version %u (this library reads version %d)", ver, PCOW_VERSION);
        return -ENOTSUP;
    }
    h->incompat = get64(b + H_INCOMPAT);
    h->compat = get64(b + H_COMPAT);
    h->flags = get64(b + H_FLAGS);
    h->cbits = get32(b + H_CBITS);
    h->sbits = get32(b + H_SBITS);
    h->vsize = get64(b + H_VSIZE);
    h->dir_off = get64(b + H_DIROFF);
    h->dir_count = get32(b + H_DIRCOUNT);
    h->dir_crc = get32(b + H_DIRCRC);
    h->active_id = get32(b + H_ACTIVE);
    h->next_id = get32(b + H_NEXTID);
    h->nstripes = get32(b + H_NSTRIPES);
    h->ubits = get32(b + H_UBITS);
    h->base_fmt = get32(b + H_BASEFMT);
    h->base_len = get32(b + H_BASELEN);
    if (h->incompat & ~INCOMPAT_KNOWN) {
        snprintf(why, wl, "unknown incompatible features 0x%llx", (unsigned long long)(h->incompat & ~INCOMPAT_KNOWN));
        return -ENOTSUP;
    }
    if (h->flags & ~HDR_FLAG_DIRTY) {
        snprintf(why, wl, "unknown header flags 0x%llx", (unsigned long long)h->flags);
        return -EINVAL;
    }
    if (h->cbits < PCOW_MIN_CLUSTER_BITS || h->cbits > PCOW_MAX_CLUSTER_BITS) {
        snprintf(why, wl, "cluster bits %u outside %d..%d", h->cbits, PCOW_MIN_CLUSTER_BITS, PCOW_MAX_CLUSTER_BITS);
        return -EINVAL;
    }
    if (h->sbits < 12 || h->sbits > h->cbits || h->cbits - h->sbits > 9) {
        snprintf(why, wl, "sub-unit bits %u outside %u..%u", h->sbits, h->cbits > 21 ? h->cbits - 9 : 12, h->cbits);
        return -EINVAL;
    }
    if (h->cbits - h->sbits > 6 && !(h->incompat & INCOMPAT_BITMAP_RECORDS)) {
        snprintf(why, wl, "%u sub-units per cluster need the BITMAP_RECORDS feature bit",
                 1u << (h->cbits - h->sbits));
        return -EINVAL;
    }
    if (h->vsize == 0 || h->vsize > MAX_VIRTUAL_SIZE) {
        snprintf(why, wl, "virtual size %llu outside 1..%llu", (unsigned long long)h->vsize, MAX_VIRTUAL_SIZE);
        return -EINVAL;
    }
    uint64_t cs = 1ull << h->cbits;
    uint64_t l1_bytes = ((h->vsize + cs - 1) / cs + cs / 16 - 1) / (cs / 16) * 8;
    if (l1_bytes > MAX_L1_BYTES) {
        snprintf(why, wl, "virtual size %llu with %llu-byte clusters needs a %llu-byte L1 table (limit %llu)",
                 (unsigned long long)h->vsize, (unsigned long long)cs, (unsigned long long)l1_bytes, MAX_L1_BYTES);
        return -EINVAL;
    }
    if (h->dir_off == 0 || h->dir_off % cs) {
        snprintf(why, wl, "layer directory offset 0x%llx is not a non-zero multiple of the cluster size", (unsigned long long)h->dir_off);
        return -EINVAL;
    }
    if (h->dir_count == 0 || h->dir_count > PCOW_MAX_LAYERS) {
        snprintf(why, wl, "layer count %u outside 1..%d", h->dir_count, PCOW_MAX_LAYERS);
        return -EINVAL;
    }
    if (h->active_id == 0 || h->next_id <= h->active_id) {
        snprintf(why, wl, "active layer id %u / next id %u invalid", h->active_id, h->next_id);
        return -EINVAL;
    }
    if (h->nstripes == 0 || h->nstripes > PCOW_MAX_STRIPES) {
        snprintf(why, wl, "stripe count %u outside 1..%d", h->nstripes, PCOW_MAX_STRIPES);
        return -EINVAL;
    }
    if (h->ubits < h->cbits || h->ubits > MAX_STRIPE_UNIT_BITS) {
        snprintf(why, wl, "stripe unit bits %u outside %u..%d", h->ubits, h->cbits, MAX_STRIPE_UNIT_BITS);
        return -EINVAL;
    }
    if ((h->nstripes > 1) != !!(h->incompat & INCOMPAT_STRIPES)) {
        snprintf(why, wl, "stripe count %u disagrees with the STRIPES feature bit", h->nstripes);
        return -EINVAL;
    }
    if (h->base_fmt > PCOW_BASE_PCOW || (h->base_fmt == PCOW_BASE_NONE) != (h->base_len == 0)) {
        snprintf(why, wl, "base format %u with base path length %u is inconsistent", h->base_fmt, h->base_len);
        return -EINVAL;
    }
    if (h->base_len > PCOW_BASE_PATH_MAX) {
        snprintf(why, wl, "base path length %u exceeds %d", h->base_len, PCOW_BASE_PATH_MAX);
        return -EINVAL;
    }
    memcpy(h->base, b + H_BASE, h->base_len);
    h->base[h->base_len] = 0;
    if (strlen(h->base) != h->base_len || !all_zero(b + H_BASE + h->base_len, PCOW_BASE_PATH_MAX - h->base_len)) {
        snprintf(why, wl, "base path contains NUL bytes or trailing garbage");
        return -EINVAL;
    }
    for (uint32_t i = 1; i < PCOW_MAX_STRIPES; i++) {
        const uint8_t *s = b + H_SNAMES + (i - 1) * H_SNAME_SIZE;
        if (i >= h->nstripes) {
            if (!all_zero(s, H_SNAME_SIZE)) {
                snprintf(why, wl, "unused stripe name %u is not zero", i);
                return -EINVAL;
            }
            continue;
        }
        uint8_t l = s[0];
        if (l == 0 || l > PCOW_STRIPE_NAME_MAX || !all_zero(s + 1 + l, H_SNAME_SIZE - 1 - l)) {
            snprintf(why, wl, "stripe name %u has bad length %u", i, l);
            return -EINVAL;
        }
        memcpy(h->sname[i], s + 1, l);
        h->sname[i][l] = 0;
        if (strlen(h->sname[i]) != l || !stripe_name_ok(h->sname[i])) {
            snprintf(why, wl, "stripe file name %u is not a plain file name", i);
            return -EINVAL;
        }
    }
    if (!all_zero(b + H_FIXED_END, H_BASE - H_FIXED_END) || !all_zero(b + H_SNAMES_END, HDR_SLOT_SIZE - H_SNAMES_END)) {
        snprintf(why, wl, "reserved header bytes are not zero");
        return -EINVAL;
    }
    return 0;
}
