/* The hierarchical bitmap (see bitmaps/hbitmap.h). */
#include "bitmaps/hbitmap.h"

#include <glib.h>
#include <string.h>

#define BITS_PER_WORD 64
#define MAX_LEVELS 12 /* 64^11 bits is far beyond any 64-bit size */

struct HBitmap {
    uint64_t nbits;
    uint64_t count;               /* set bits at level 0 (atomic) */
    int levels;                   /* level `levels - 1` is a single word */
    uint64_t level_bits[MAX_LEVELS];
    uint64_t *level[MAX_LEVELS];
};

static uint64_t words_for(uint64_t bits)
{
    return bits ? (bits + BITS_PER_WORD - 1) / BITS_PER_WORD : 1;
}

/* Bits [lo, hi] of a word, 0 <= lo <= hi < 64. */
static uint64_t mask_between(unsigned lo, unsigned hi)
{
    uint64_t upper = hi == 63 ? ~0ull : ((1ull << (hi + 1)) - 1);
    return upper & ~((1ull << lo) - 1);
}

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

HBitmap *hbitmap_try_new(uint64_t nbits)
{
    HBitmap *hb = g_new0(HBitmap, 1);
    hb->nbits = nbits;
    uint64_t bits = nbits;
    for (int l = 0;; l++) {
        g_assert(l < MAX_LEVELS);
        hb->level_bits[l] = bits;
        uint64_t words = words_for(bits);
        hb->level[l] = g_try_new0(uint64_t, words);
        if (!hb->level[l]) {
            hbitmap_free(hb);
            return NULL;
        }
        hb->levels = l + 1;
        if (words == 1)
            break;
        bits = words;
    }
    return hb;
}

HBitmap *hbitmap_new(uint64_t nbits)
{
    HBitmap *hb = hbitmap_try_new(nbits);
    if (!hb)
        g_error("hbitmap: out of memory for %" G_GUINT64_FORMAT " bits", nbits);
    return hb;
}

void hbitmap_free(HBitmap *hb)
{
    if (!hb)
        return;
    for (int l = 0; l < hb->levels; l++)
        g_free(hb->level[l]);
    g_free(hb);
}

HBitmap *hbitmap_copy(const HBitmap *hb)
{
    HBitmap *c = hbitmap_new(hb->nbits);
    for (int l = 0; l < hb->levels; l++)
        memcpy(c->level[l], hb->level[l], words_for(hb->level_bits[l]) * sizeof(uint64_t));
    c->count = __atomic_load_n(&hb->count, __ATOMIC_ACQUIRE);
    return c;
}

uint64_t hbitmap_size(const HBitmap *hb) { return hb->nbits; }

uint64_t hbitmap_count(const HBitmap *hb)
{
    return __atomic_load_n(&hb->count, __ATOMIC_ACQUIRE);
}

size_t hbitmap_memory(const HBitmap *hb)
{
    size_t total = sizeof(*hb);
    for (int l = 0; l < hb->levels; l++)
        total += words_for(hb->level_bits[l]) * sizeof(uint64_t);
    return total;
}

bool hbitmap_get(const HBitmap *hb, uint64_t bit)
{
    g_assert(bit < hb->nbits);
    return (load(&hb->level[0][bit / BITS_PER_WORD]) >> (bit % BITS_PER_WORD)) & 1;
}

/* Sets [start, start+count) of one level and, for the words it touched,
 * the bits of the level above.  Level 0 is set before its parents, so a
 * reader that sees a parent bit finds the child word non-zero. */
static uint64_t set_level(HBitmap *hb, int l, uint64_t start, uint64_t count)
{
    uint64_t *words = hb->level[l];
    uint64_t fw = start / BITS_PER_WORD, lw = (start + count - 1) / BITS_PER_WORD;
    uint64_t newly = 0;
    for (uint64_t w = fw; w <= lw; w++) {
        unsigned lo = w == fw ? start % BITS_PER_WORD : 0;
        unsigned hi = w == lw ? (start + count - 1) % BITS_PER_WORD : BITS_PER_WORD - 1;
        uint64_t mask = mask_between(lo, hi);
        /* A plain load first: rewriting dirty granules costs no atomic RMW. */
        if ((load(&words[w]) & mask) == mask)
            continue;
        uint64_t old = __atomic_fetch_or(&words[w], mask, __ATOMIC_ACQ_REL);
        newly += (uint64_t)__builtin_popcountll(mask & ~old);
    }
    if (l + 1 < hb->levels)
        set_level(hb, l + 1, fw, lw - fw + 1);
    return newly;
}

uint64_t hbitmap_set(HBitmap *hb, uint64_t start, uint64_t count)
{
    g_assert(start <= hb->nbits && count <= hb->nbits - start);
    if (count == 0)
        return 0;
    uint64_t newly = set_level(hb, 0, start, count);
    if (newly)
        __atomic_fetch_add(&hb->count, newly, __ATOMIC_ACQ_REL);
    return newly;
}

void hbitmap_or_word(HBitmap *hb, uint64_t word, uint64_t bits)
{
    g_assert(word < words_for(hb->nbits));
    if (!bits || (load(&hb->level[0][word]) & bits) == bits)
        return;
    uint64_t old = __atomic_fetch_or(&hb->level[0][word], bits, __ATOMIC_ACQ_REL);
    uint64_t newly = (uint64_t)__builtin_popcountll(bits & ~old);
    if (hb->levels > 1)
        set_level(hb, 1, word, 1);
    if (newly)
        __atomic_fetch_add(&hb->count, newly, __ATOMIC_ACQ_REL);
}

uint64_t hbitmap_word(const HBitmap *hb, uint64_t word)
{
    return load(&hb->level[0][word]);
}

/* Clears [start, start+count) of one level, then the parent bits of the
 * words that became zero.  Exclusive access. */
static void reset_level(HBitmap *hb, int l, uint64_t start, uint64_t count)
{
    uint64_t *words = hb->level[l];
    uint64_t fw = start / BITS_PER_WORD, lw = (start + count - 1) / BITS_PER_WORD;
    uint64_t cleared = 0;
    for (uint64_t w = fw; w <= lw; w++) {
        unsigned lo = w == fw ? start % BITS_PER_WORD : 0;
        unsigned hi = w == lw ? (start + count - 1) % BITS_PER_WORD : BITS_PER_WORD - 1;
        uint64_t mask = mask_between(lo, hi);
        uint64_t old = words[w];
        if (old & mask) {
            cleared += (uint64_t)__builtin_popcountll(old & mask);
            __atomic_store_n(&words[w], old & ~mask, __ATOMIC_RELEASE);
        }
    }
    if (l == 0)
        hb->count -= cleared;
    if (l + 1 >= hb->levels)
        return;
    /* Interior words are now zero; the end words only if nothing else was set. */
    uint64_t pf = fw, pl = lw;
    if (words[fw] != 0)
        pf++;
    if (lw >= pf && words[lw] != 0)
        pl--;
    if (pf <= pl && pl != UINT64_MAX)
        reset_level(hb, l + 1, pf, pl - pf + 1);
}

void hbitmap_reset(HBitmap *hb, uint64_t start, uint64_t count)
{
    g_assert(start <= hb->nbits && count <= hb->nbits - start);
    if (count == 0)
        return;
    reset_level(hb, 0, start, count);
}

void hbitmap_reset_all(HBitmap *hb)
{
    for (int l = 0; l < hb->levels; l++)
        memset(hb->level[l], 0, words_for(hb->level_bits[l]) * sizeof(uint64_t));
    hb->count = 0;
}

/* The first set bit at or after `pos` on level l, or -1. */
static int64_t find_set(const HBitmap *hb, int l, uint64_t pos)
{
    while (pos < hb->level_bits[l]) {
        uint64_t w = pos / BITS_PER_WORD;
        uint64_t word = load(&hb->level[l][w]) & (~0ull << (pos % BITS_PER_WORD));
        if (word)
            return (int64_t)(w * BITS_PER_WORD + (uint64_t)__builtin_ctzll(word));
        if (l + 1 >= hb->levels)
            return -1;
        /* Ask the level above which word is the next non-empty one. */
        int64_t next = find_set(hb, l + 1, w + 1);
        if (next < 0)
            return -1;
        pos = (uint64_t)next * BITS_PER_WORD;
    }
    return -1;
}

int64_t hbitmap_next_set(const HBitmap *hb, uint64_t start, uint64_t end)
{
    if (end > hb->nbits)
        end = hb->nbits;
    if (start >= end)
        return -1;
    int64_t r = find_set(hb, 0, start);
    return r >= 0 && (uint64_t)r < end ? r : -1;
}

int64_t hbitmap_next_clear(const HBitmap *hb, uint64_t start, uint64_t end)
{
    if (end > hb->nbits)
        end = hb->nbits;
    if (start >= end)
        return -1;
    const uint64_t *words = hb->level[0];
    uint64_t pos = start;
    while (pos < end) {
        uint64_t w = pos / BITS_PER_WORD;
        uint64_t word = ~load(&words[w]) & (~0ull << (pos % BITS_PER_WORD));
        if (word) {
            uint64_t r = w * BITS_PER_WORD + (uint64_t)__builtin_ctzll(word);
            return r < end ? (int64_t)r : -1;
        }
        pos = (w + 1) * BITS_PER_WORD;
    }
    return -1;
}

bool hbitmap_all_set(const HBitmap *hb, uint64_t start, uint64_t count)
{
    return count == 0 || hbitmap_next_clear(hb, start, start + count) < 0;
}

/* Recomputes the upper levels and the count from level 0. */
static void rebuild(HBitmap *hb)
{
    uint64_t count = 0;
    uint64_t n0 = words_for(hb->nbits);
    for (uint64_t w = 0; w < n0; w++)
        count += (uint64_t)__builtin_popcountll(hb->level[0][w]);
    hb->count = count;
    for (int l = 1; l < hb->levels; l++) {
        uint64_t below = words_for(hb->level_bits[l - 1]);
        memset(hb->level[l], 0, words_for(hb->level_bits[l]) * sizeof(uint64_t));
        for (uint64_t w = 0; w < below; w++)
            if (hb->level[l - 1][w])
                hb->level[l][w / BITS_PER_WORD] |= 1ull << (w % BITS_PER_WORD);
    }
}

void hbitmap_merge(HBitmap *dst, const HBitmap *src)
{
    g_assert(dst->nbits == src->nbits);
    uint64_t n0 = words_for(dst->nbits);
    /* Walk only src's non-empty words, found through its upper level. */
    for (int64_t w = dst->levels > 1 ? find_set(src, 1, 0) : 0;
         w >= 0 && (uint64_t)w < n0;
         w = dst->levels > 1 ? find_set(src, 1, (uint64_t)w + 1) : -1) {
        uint64_t bits = load(&src->level[0][w]);
        if (bits && (dst->level[0][w] & bits) != bits) {
            uint64_t old = __atomic_fetch_or(&dst->level[0][w], bits, __ATOMIC_ACQ_REL);
            dst->count += (uint64_t)__builtin_popcountll(bits & ~old);
            if (dst->levels > 1)
                set_level(dst, 1, (uint64_t)w, 1);
        }
    }
}

size_t hbitmap_serialized_size(const HBitmap *hb)
{
    return (size_t)((hb->nbits + BITS_PER_WORD - 1) / BITS_PER_WORD) * 8;
}

void hbitmap_serialize_words(const HBitmap *hb, uint64_t first, uint64_t nwords, uint8_t *buf)
{
    for (uint64_t i = 0; i < nwords; i++) {
        uint64_t le = GUINT64_TO_LE(load(&hb->level[0][first + i]));
        memcpy(buf + i * 8, &le, 8);
    }
}

void hbitmap_serialize(const HBitmap *hb, uint8_t *buf)
{
    hbitmap_serialize_words(hb, 0, hbitmap_serialized_size(hb) / 8, buf);
}

bool hbitmap_deserialize(HBitmap *hb, const uint8_t *buf)
{
    uint64_t n = hbitmap_serialized_size(hb) / 8;
    if (n > 0 && hb->nbits % BITS_PER_WORD) {
        uint64_t last;
        memcpy(&last, buf + (n - 1) * 8, 8);
        last = GUINT64_FROM_LE(last);
        if (last & ~mask_between(0, (unsigned)(hb->nbits % BITS_PER_WORD) - 1))
            return false;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t le;
        memcpy(&le, buf + i * 8, 8);
        hb->level[0][i] = GUINT64_FROM_LE(le);
    }
    rebuild(hb);
    return true;
}
