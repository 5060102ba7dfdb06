/* A hierarchical bitmap: the pure data structure behind dirty bitmaps.
 *
 * Level 0 holds the bits (64 per word).  Each upper level has one bit per
 * word of the level below, set when that word is non-zero, up to a single
 * top word.  Searching for the next set bit therefore skips empty regions
 * in O(levels) steps instead of scanning them.  Memory is the bits plus
 * about 1/63 of them for the upper levels.
 *
 * Concurrency: hbitmap_set() may run concurrently with other
 * hbitmap_set() calls and with readers (it uses atomic operations and
 * always sets level 0 before the upper levels).  Every other mutating
 * call (reset, merge, deserialise) needs exclusive access; the owner
 * (bitmaps/dirty-bitmap.c) provides it with a reader/writer lock.
 * There is no I/O and no locking in this file. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct HBitmap HBitmap;

/* A bitmap of `nbits` clear bits (nbits may be 0). */
HBitmap *hbitmap_new(uint64_t nbits);
/* Like hbitmap_new, but NULL when the memory cannot be allocated (sizes
 * that come from users: a bitmap of a huge node). */
HBitmap *hbitmap_try_new(uint64_t nbits);
/* Frees the bitmap (NULL is fine). */
void hbitmap_free(HBitmap *hb);
/* A new bitmap with the same bits. */
HBitmap *hbitmap_copy(const HBitmap *hb);
/* Number of bits. */
uint64_t hbitmap_size(const HBitmap *hb);
/* Number of set bits. */
uint64_t hbitmap_count(const HBitmap *hb);
/* Bytes of memory held by the bitmap (all levels and the header). */
size_t hbitmap_memory(const HBitmap *hb);

/* True if bit `bit` is set. */
bool hbitmap_get(const HBitmap *hb, uint64_t bit);
/* True if every bit in [start, start+count) is set (count 0: true). */
bool hbitmap_all_set(const HBitmap *hb, uint64_t start, uint64_t count);
/* Sets [start, start+count); safe against concurrent setters and readers.
 * Returns the number of bits that were clear before. */
uint64_t hbitmap_set(HBitmap *hb, uint64_t start, uint64_t count);
/* ORs `bits` into level-0 word `word`; safe like hbitmap_set. */
void hbitmap_or_word(HBitmap *hb, uint64_t word, uint64_t bits);
/* Level-0 word `word` (bit i of the word = bit word*64+i). */
uint64_t hbitmap_word(const HBitmap *hb, uint64_t word);
/* Clears [start, start+count) (exclusive access). */
void hbitmap_reset(HBitmap *hb, uint64_t start, uint64_t count);
/* Clears every bit (exclusive access). */
void hbitmap_reset_all(HBitmap *hb);

/* The first set bit in [start, end), or -1. */
int64_t hbitmap_next_set(const HBitmap *hb, uint64_t start, uint64_t end);
/* The first clear bit in [start, end), or -1. */
int64_t hbitmap_next_clear(const HBitmap *hb, uint64_t start, uint64_t end);

/* dst |= src; both must have the same size (exclusive access to dst). */
void hbitmap_merge(HBitmap *dst, const HBitmap *src);

/* Bytes needed to serialise the bits: ceil(nbits / 64) * 8. */
size_t hbitmap_serialized_size(const HBitmap *hb);
/* Writes level 0 as little-endian 64-bit words (bit i = bit i%64 of word i/64). */
void hbitmap_serialize(const HBitmap *hb, uint8_t *buf);
/* Writes `nwords` level-0 words starting at word `first` (little-endian). */
void hbitmap_serialize_words(const HBitmap *hb, uint64_t first, uint64_t nwords, uint8_t *buf);
/* Replaces the bits from a buffer made by hbitmap_serialize (exclusive access).
 * Returns false (bitmap unchanged) if padding bits beyond nbits are set. */
bool hbitmap_deserialize(HBitmap *hb, const uint8_t *buf);
