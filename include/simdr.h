/*
 * simdr.h - the public interface of libsimdr, an embeddable append-only
 * key/value storage engine that reads and writes simd-r-drive files.
 *
 * This header is the manual. Every name is prefixed simdr_/SIMDR_; every
 * handle is opaque; every fallible call returns an int status (0 = SIMDR_OK,
 * negative = one of enum simdr_status). simdr_strerror() turns a code into
 * static text and simdr_last_error() gives the calling thread's message for
 * its last failure (file, offset, errno text).
 *
 * THE ZERO-COPY LIFETIME RULE (repeated on every call that returns a pointer
 * into the file map): a pointer obtained from a simdr_entry points into a
 * read-only memory map of the store file and stays valid, with unchanged
 * bytes, until that entry is released with simdr_entry_release(); this holds
 * while the store grows, is compacted, or is closed by another thread. The
 * memory must never be written.
 *
 * THREADS: a simdr_store may be used from any number of threads at once.
 * Reads never wait for writers; writes (put, delete, rename, compact, ...)
 * are serialized inside the store. simdr_close() must not run concurrently
 * with any other call on the same store, except simdr_entry_release() and the
 * accessors of entries obtained earlier. A simdr_entry may be read by many
 * threads at once; it is released exactly once. A simdr_iter belongs to one
 * thread at a time.
 *
 * PROCESSES: one writable open per file across processes (advisory flock);
 * read-only opens in other processes are always allowed and can call
 * simdr_refresh() to see entries appended since they opened. The writer
 * publishes its committed tail in the side file "<path>.simdr" (one page,
 * docs/FORMAT.md); readers take the end of the store from it. A read-only
 * process reads through its map only bytes it has proven to be in the file;
 * what lies beyond its tail (an append in flight, which the writer may cut
 * again after a failure or at its next open) is read with pread, so the
 * writer's truncations never hurt it. A truncation of the file by any other
 * program below what a process has already indexed is another matter: the
 * pages beyond the new end are gone, and a process holding the store open
 * (or entries from it) receives SIGBUS when it touches them - in a get, an
 * iteration, or an entry's data (the check of a value over 1 MiB reads the
 * file instead, and answers a mismatch). Never shorten a store file in place; let
 * simdr_compact() replace it. The side file is read with pread by read-only
 * opens, so a side file shortened in place only costs them a refresh by the
 * file's end (as without one); the writer maps its page, and shortening it
 * under a writer raises SIGBUS in the writer at its next append. A store
 * opened from its hint file "<path>.hint" maps its index from that file:
 * shortening the hint in place under it raises SIGBUS at the next lookup
 * (a close replaces the hint by renaming a new one over it, never in place).
 *
 * FORK: a handle belongs to the process that opened it. A child created by
 * fork() inherits the handle, but keeps its own copy of the tail and
 * the index, so two processes appending would overwrite each other's
 * acknowledged entries. In the child every write, simdr_sync() and
 * simdr_compact() on an inherited handle returns SIMDR_EINVAL ("store handle
 * used in a forked child; open the store again"), and so does
 * simdr_refresh() of an inherited read-only handle; reads (simdr_check and a
 * simdr_copy out of it included) still work and see the store as it was at
 * the fork (the parent's later writes are not indexed there); simdr_close()
 * in the child only frees the handle (no sync, no hint file, nothing written
 * to the side file). None of these waits for a call another thread of the
 * parent was making at the fork (it never ends in the child). The child holds no
 * lock: a fork handler lets go of the descriptors and maps that carry it
 * (the child keeps a read-only descriptor), so the parent's close, or its
 * death, leaves the store free for the next writer while the child lives.
 * To write from the child, open the store there (after the parent closed
 * it, or read-only while it is open). Detected with a
 * pthread_atfork() handler: a child made by a raw clone() or vfork() is not
 * detected.
 */
#ifndef SIMDR_H
#define SIMDR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SIMDR_BUILDING_LIBRARY) && defined(__GNUC__)
#define SIMDR_API __attribute__((visibility("default")))
#else
#define SIMDR_API
#endif

#define SIMDR_VERSION_MAJOR 0
#define SIMDR_VERSION_MINOR 2
#define SIMDR_VERSION_PATCH 0
#define SIMDR_VERSION_STRING "0.2.0"

/** Returns SIMDR_VERSION_STRING of the library actually linked. */
SIMDR_API const char *simdr_version(void);

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

enum simdr_status {
    SIMDR_OK = 0,
    SIMDR_NOTFOUND = -1,   /**< key absent or deleted; end of iteration */
    SIMDR_EINVAL = -2,     /**< bad argument (empty value, lone 0x00, NULL, ...) */
    SIMDR_EIO = -3,        /**< the operating system reported an I/O error */
    SIMDR_ENOSPC = -4,     /**< disk full or file size limit reached */
    SIMDR_ECORRUPT = -5,   /**< the file is a damaged store that is not safely repairable */
    SIMDR_ENOTSTORE = -6,  /**< the file is not a simd-r-drive store */
    SIMDR_ELOCKED = -7,    /**< another process has the file open for writing */
    SIMDR_EACCES = -8,     /**< permission denied */
    SIMDR_ENOMEM = -9,     /**< out of memory or address space */
    SIMDR_EREADONLY = -10, /**< write attempted on a read-only store */
    SIMDR_ECHECKSUM = -11, /**< an entry's CRC-32 does not match its payload */
    SIMDR_ENOENT = -12,    /**< the file does not exist (open-existing, read-only) */
    SIMDR_ESOURCE = -13,   /**< a stream source reported an error */
    SIMDR_ETOOBIG = -14,   /**< offset or size beyond what the engine supports */
    SIMDR_ESTOPPED = -15,  /**< a callback asked to stop (its own code is not lost: see call) */
    SIMDR_EFAILED = -16    /**< the store failed (a write that could not be undone, or
                                a failed sync): writes and syncs are refused until
                                the store is reopened; see "The failed state" */
};

/** Static English text for a status code; never NULL. */
SIMDR_API const char *simdr_strerror(int code);

/**
 * The calling thread's message for its most recent failed simdr_ call
 * (e.g. "store.bin: locked by another process (flock: Resource temporarily
 * unavailable)"). Thread-local, valid until this thread's next simdr_ call
 * that fails. "" when there is none.
 */
SIMDR_API const char *simdr_last_error(void);

/* ------------------------------------------------------------------------ */
/* Opening and closing                                                       */
/* ------------------------------------------------------------------------ */

typedef struct simdr_store simdr_store;
typedef struct simdr_entry simdr_entry;
typedef struct simdr_iter simdr_iter;

/** How a store is opened. */
enum simdr_open_mode {
    SIMDR_OPEN_CREATE = 0,    /**< read/write, create the file if missing (default) */
    SIMDR_OPEN_EXISTING = 1,  /**< read/write, SIMDR_ENOENT if missing */
    SIMDR_OPEN_READONLY = 2   /**< read only, never modifies the file, no lock taken */
};

/** Where payloads start: see FORMAT.md. Only used for NEW files; an existing
 *  file's layout is detected from its checksums. */
enum simdr_layout {
    SIMDR_LAYOUT_ALIGNED64 = 0, /**< payloads on 64-byte offsets (simd-r-drive >= 0.15; default) */
    SIMDR_LAYOUT_UNALIGNED = 1  /**< no padding (simd-r-drive <= 0.13, including 0.4.x) */
};

/** What a successful write promises. */
enum simdr_durability {
    SIMDR_SYNC_NONE = 0, /**< data is in the OS page cache: survives a process
                              kill, not a power loss (default, as the reference) */
    SIMDR_SYNC_DATA = 1  /**< fdatasync before each write/batch returns: survives
                              power loss; concurrent writers share one sync */
};

/** How appends reach the file (writable opens). */
enum simdr_append_mode {
    SIMDR_APPEND_WRITE = 0, /**< one pwrite/pwritev system call per write (default) */
    SIMDR_APPEND_MAPPED = 1, /**< puts, batches, deletes, renames and replicated bytes are
                                 copied into a writable shared mapping of file space the
                                 store preallocates (fallocate) in steps of
                                 max(1 MiB, 1/8 of the file): no system call per write.
                                 While the store is open the file is longer than its
                                 valid entries (zeros follow the tail); simdr_sync()
                                 and simdr_close() cut it back to the tail (ftruncate),
                                 and the next writable open after a crash cuts the
                                 zeros (also with repair 0: they hold no entry). A
                                 full disk is SIMDR_ENOSPC when a step is
                                 allocated, never a signal. Promises what the
                                 durability mode promises (a killed process loses
                                 nothing acknowledged). Streams still use pwrite. On a
                                 file system without fallocate the store falls back to
                                 SIMDR_APPEND_WRITE. Not for copy-on-write file systems
                                 (btrfs, ZFS), where preallocated space is not kept for
                                 the rewrite: a write fault there could raise SIGBUS on a
                                 full disk. docs/RELIABILITY.md, "Mapped appends", says
                                 what other processes and the Rust crate see. */
    SIMDR_APPEND_ZEROED = 2 /**< pwrite appends, as SIMDR_APPEND_WRITE, into file space
                                 the store has filled with written zeros ahead of the
                                 tail, in steps of max(1 MiB, min(1/8 of the file,
                                 8 MiB)). A sync then writes data onto blocks that
                                 already exist inside the file's length: on ext4 and
                                 XFS an fdatasync is a data write and a device flush
                                 without a journal commit (docs/BENCHMARKS.md). For
                                 durable writes in small groups (SIMDR_SYNC_DATA, or a
                                 simdr_sync() after each group): the zeros cost a
                                 second write of every byte, so steps are written only
                                 while the store's syncs cover 256 KiB or less on
                                 average, and not before its first sync; otherwise
                                 writes extend the file as plain appends. The zeros
                                 stay across simdr_sync(); simdr_close() cuts the file
                                 back to its tail, the next writable open after a crash
                                 cuts them (as for SIMDR_APPEND_MAPPED, whose notes on
                                 other processes apply). A full disk while writing
                                 zeros is not an error: the write goes on as a plain
                                 append. No use on copy-on-write file systems (btrfs,
                                 ZFS), which never overwrite in place. */
};

typedef struct simdr_options {
    int open_mode;     /**< enum simdr_open_mode */
    int layout;        /**< enum simdr_layout, for a new or empty file */
    int durability;    /**< enum simdr_durability */
    int repair;        /**< writable opens: cut a torn tail (after saving it
                            beside the file). 1 by default; 0 makes a torn
                            tail an SIMDR_ECORRUPT error instead, the file
                            untouched. A torn tail of zero bytes only (the
                            preallocated space SIMDR_APPEND_MAPPED leaves
                            after a crash, or a file length that reached the
                            disk before its data) holds no entry and is cut,
                            not saved, whatever repair says (simdr_recovery
                            reports it in bytes_cut); a single other byte
                            in the tail makes it a torn tail as above, so
                            zeros in the middle of the chain, entries after
                            them, never count as such a tail
                            (docs/RELIABILITY.md, "Mapped appends") */
    int salvage;       /**< read-only opens: 1 serves the sound prefix of a store
                            damaged in the middle (the longest chain from offset 0
                            before the damage whose every entry passes its CRC;
                            simdr_check then reports the rest); 0 (default)
                            refuses it with SIMDR_ECORRUPT. Writable opens always
                            refuse it. */
    int use_hint;      /**< 1 (default): keep the index in "<path>.hint" at close
                            and load it at open when it still matches the file
                            (validated, never trusted blindly); 0: always rebuild */
    int verify_reads;  /**< 1 (default): every read checks the CRC-32 of the value it
                            hands out and answers SIMDR_ECORRUPT instead of damaged
                            bytes (see "Damaged values" below); 0: lookups skip the
                            check (the caller uses simdr_entry_verify). Copy, move
                            and rename always check, whatever this says. */
    unsigned file_mode;/**< permission bits for a created file (default 0644) */
    uint64_t expected_keys; /**< writable opens: size the in-memory index for this many
                            keys at once (0, the default: start small and grow). A
                            bulk load of a known size then never stops to grow the
                            index. A hint: a table (10 to 15 bytes a key) of up
                            to 32 MiB (about 2.7M keys) is taken whole at open; a
                            larger one is only reserved, its memory taken as keys
                            land in its 4 KiB pages, so an overestimate costs
                            address space, not memory or open time. Without the
                            address space the index grows as usual. More keys
                            than an index holds (3,435,973,835) is SIMDR_EINVAL,
                            whatever the open mode. */
    int append_mode;   /**< enum simdr_append_mode: SIMDR_APPEND_WRITE (default),
                            SIMDR_APPEND_MAPPED or SIMDR_APPEND_ZEROED; ignored by
                            read-only opens */
} simdr_options;

/** Fills *opts with the defaults described above. */
SIMDR_API void simdr_options_init(simdr_options *opts);

/**
 * Opens (or creates) the store at path. opts may be NULL for defaults.
 * Recovery runs here: a torn or interrupted last append is detected; a
 * writable open saves the cut bytes to "<path>.torn-<offset>" and truncates
 * (a tail of zero bytes only is cut without saving: see opts->repair), a
 * read-only open only ignores them. simdr_recovery() tells what happened.
 * The end of the store is the committed tail the side file "<path>.simdr"
 * records (its writer updates it after every append; a writable open creates
 * it, a new store starting at tail 0): bytes after it were never acknowledged
 * and are a torn tail whatever they contain, so a crash during the first
 * write into a new store leaves a store that opens. Without a usable side
 * file (missing, damaged, naming another file) the whole file is recovered.
 * A file with no side file that holds no valid entry chain is never modified.
 * On success *out owns the store: close it with simdr_close().
 * The path must name a regular file: a directory ("is a directory") or a
 * FIFO, device or socket ("not a regular file") gives SIMDR_EINVAL at once
 * (a FIFO is never waited on). Each open also reads the process's file size
 * limit (RLIMIT_FSIZE): a write that would cross it is refused with
 * SIMDR_ENOSPC before it is made, so the default SIGXFSZ never kills the
 * process (the library leaves signal dispositions alone). A limit lowered
 * with setrlimit() after the last simdr_open() is not seen: such a write
 * then raises SIGXFSZ unless the program ignores it (the kernel then gives
 * EFBIG, reported as SIMDR_ENOSPC).
 * The store keeps path and names its side file, its compacted file and a
 * saved torn tail from it, and a refresh looks for a replaced file there: a
 * relative path is read against the current directory each time, so a
 * program that calls chdir() while the store is open passes an absolute path.
 * A path that is a symbolic link is replaced by the file it names, so that a
 * compaction replaces that file, not the link.
 * Errors: SIMDR_EINVAL, SIMDR_ENOENT, SIMDR_EACCES, SIMDR_ELOCKED,
 * SIMDR_ENOTSTORE (never modified), SIMDR_ECORRUPT (damage that is not a torn
 * tail: a valid newest entry behind which the chain breaks; never modified;
 * see opts->salvage), SIMDR_ENOSPC (a writable open that must save a torn
 * tail beside the file before cutting it, or create the file or its side
 * file, on a full disk; nothing cut: a read-only open still works), SIMDR_EIO,
 * SIMDR_ENOMEM.
 */
SIMDR_API int simdr_open(simdr_store **out, const char *path, const simdr_options *opts);

/**
 * Closes the store and frees it. simdr_close(NULL) is a no-op. Entries not yet
 * released stay valid (the lifetime rule). A clean close is a durability
 * point in every mode: writes not yet synced are synced (one fdatasync, none
 * when nothing was written since the last sync) before the side file marks
 * the store closed, so a cleanly closed store survives a power cut. Returns
 * the result of that sync (SIMDR_EIO, ...; the store is then not marked
 * closed and the next open recovers it as after a crash), else SIMDR_OK.
 * With SIMDR_APPEND_MAPPED and SIMDR_APPEND_ZEROED the file is first cut
 * back to its tail, so a closed store is exactly as long as its entries.
 */
SIMDR_API int simdr_close(simdr_store *store);

/**
 * Changes how the store's later appends reach the file (enum
 * simdr_append_mode), as if it had been opened with that mode: leaving
 * SIMDR_APPEND_MAPPED or SIMDR_APPEND_ZEROED cuts the file back to its tail
 * first; the mode the store has already changes nothing. For a program whose durability changes at run time (a server's
 * configuration). Errors: SIMDR_EINVAL (unknown mode), SIMDR_EREADONLY,
 * SIMDR_EFAILED, SIMDR_EIO (the cut failed: the mode is unchanged).
 */
SIMDR_API int simdr_set_append_mode(simdr_store *store, int mode);

/**
 * fdatasync the file now, whatever the durability mode. With
 * SIMDR_APPEND_MAPPED the preallocated zeros after the tail are cut first
 * (ftruncate), so the synced file ends at its last entry; a failed cut is
 * returned (SIMDR_EIO, ...) after the sync, and leaves only zeros behind.
 * SIMDR_APPEND_ZEROED keeps its zeros: a sync over them commits no change
 * of the file's length.
 *
 * THE FAILED STATE. A sync that fails is final for the handle: after a
 * failed fdatasync the kernel may already have dropped the pages it could
 * not write and report success on the next one, so the data written since
 * the last successful sync can no longer be trusted to reach the disk (the
 * PostgreSQL "fsyncgate" lesson). The call that saw the failure returns its
 * error (SIMDR_EIO, SIMDR_ENOSPC, ...); from then on every write, sync and
 * compaction returns SIMDR_EFAILED until the store is closed and reopened.
 * Readers of the failed handle are not refused: they see the store as the
 * last successful sync left it (entries written after it are withdrawn from
 * the index, count and file size before the error returns), so a value
 * whose durability was not confirmed is never served as stored. With
 * SIMDR_SYNC_DATA that is exactly the set of acknowledged writes; with
 * SIMDR_SYNC_NONE it also drops writes acknowledged since the last sync.
 * The withdrawn bytes stay in the file (cutting them could fault another
 * process that maps them); reopening re-verifies the file as after a crash,
 * so an entry whose write reported the failure may reappear there, whole and
 * with its checksum verified, or be absent, like any write in flight at a
 * crash. (Only if memory runs out while withdrawing them do they stay
 * readable in the failed handle.) A write whose undo fails (a truncation
 * after a failed append) also fails the store; it had published nothing.
 * Pages the kernel could not write may stay cached as clean: they verify,
 * but are not on the disk, and a new descriptor's fdatasync would not write
 * them. So the next writable open of that file in the same process writes
 * every byte above the last durable record again and syncs it before it
 * returns (SIMDR_EIO from simdr_open if that sync fails too; the next open
 * tries again). A process started after the failure cannot know of it: it
 * trusts the page cache as after any crash (restart the machine, or copy
 * the store, to be sure). Servers reopen a failed store in place rather
 * than restart for this reason (simdr-server does, docs/SERVER.md).
 * Errors: SIMDR_EINVAL, SIMDR_EIO, SIMDR_ENOSPC, SIMDR_EFAILED.
 */
SIMDR_API int simdr_sync(simdr_store *store);

/**
 * Read-only stores: picks up entries another process appended (and a
 * compaction that replaced the file). Only entries up to the writer's
 * committed tail (from the side file) become visible, each checked (link and
 * CRC) with pread; without a side file, only a chain that ends exactly at the
 * file's end and leads back to the store's tail. Writable stores: no-op.
 * *new_entries (may be NULL) receives how many entries were added to the
 * view. A refresh that fails (e.g. the file that replaced the store cannot be
 * loaded yet) leaves the store as it was; a later call tries again.
 */
SIMDR_API int simdr_refresh(simdr_store *store, uint64_t *new_entries);

/** What recovery did when the store was opened. */
typedef struct simdr_recovery_info {
    uint64_t file_size;      /**< file size found at open */
    uint64_t valid_size;     /**< end of the last valid entry */
    uint64_t bytes_cut;      /**< file_size - valid_size (0 for a sound file; 0 for a
                                  read-only open while a writer is appending: its
                                  bytes beyond the committed tail are in flight) */
    int truncated;           /**< 1 when the file was cut (writable open) */
    char saved_path[4096];   /**< where the cut bytes were saved, or "". A cut of
                                  zero bytes only is never saved (""). A run of
                                  128 KiB or more of zero bytes ending a cut (the
                                  preallocated space of SIMDR_APPEND_MAPPED) is not
                                  copied: the file then ends at the last non-zero
                                  byte */
    int zeros_only;          /**< 1 when bytes_cut > 0 and every one of those bytes is
                                  zero: space a mapped or zeroed writer allocated ahead
                                  of its tail, or a length that reached the disk before
                                  its data. It holds no entry (never saved, cut also
                                  with repair 0) and simdr_check does not report it */
} simdr_recovery_info;

SIMDR_API int simdr_recovery(const simdr_store *store, simdr_recovery_info *info);

/* ------------------------------------------------------------------------ */
/* Keys                                                                      */
/* ------------------------------------------------------------------------ */

/** XXH3-64 (seed 0) of the key: the only thing the file stores of a key. */
SIMDR_API uint64_t simdr_hash_key(const void *key, size_t key_len);

/**
 * Writes the reference's 16-byte namespaced key into out: XXH3-64 of the
 * namespace (little-endian) followed by XXH3-64 of the key (little-endian).
 * Use out as an ordinary key.
 */
SIMDR_API void simdr_namespaced_key(const void *ns, size_t ns_len, const void *key,
                                    size_t key_len, uint8_t out[16]);

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */
/*                                                                           */
/* Every write appends; tail_out (may be NULL) receives the file's new valid */
/* length, as the reference returns. Refused with SIMDR_EINVAL and nothing   */
/* appended: an empty value, the value consisting of the single byte 0x00,   */
/* and (streams) a value of zero bytes only; so is a NULL key (in a batch,  */
/* any item's) with a non-zero length. SIMDR_ETOOBIG, nothing appended: a    */
/* value, or a batch's values together, that would take the file past the   */
/* format's 128 TiB (lengths near SIZE_MAX included). A failed write leaves  */
/* the file, the index and the tail exactly as before it (a failed sync in   */
/* SIMDR_SYNC_DATA mode: see "The failed state" at simdr_sync). A batch     */
/* that fails publishes none of its entries: what it needs in memory is      */
/* allocated before anything of it is written (SIMDR_ENOMEM then leaves the  */
/* store unchanged); while a batch is being published a concurrent reader    */
/* may see some of its keys a moment before others. Errors common to all     */
/* writes:                                                                   */
/* SIMDR_EINVAL, SIMDR_EREADONLY, SIMDR_ENOSPC, SIMDR_EIO, SIMDR_ETOOBIG,    */
/* SIMDR_EFAILED.                                                            */
/* ------------------------------------------------------------------------ */

SIMDR_API int simdr_put(simdr_store *store, const void *key, size_t key_len,
                        const void *value, size_t value_len, uint64_t *tail_out);

/** As simdr_put with a key hash computed by the caller (simdr_hash_key). */
SIMDR_API int simdr_put_hashed(simdr_store *store, uint64_t key_hash, const void *value,
                               size_t value_len, uint64_t *tail_out);

typedef struct simdr_kv {
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
} simdr_kv;

typedef struct simdr_hashed_kv {
    uint64_t key_hash;
    const void *value;
    size_t value_len;
} simdr_hashed_kv;

/**
 * Appends n entries with one lock and one write system call. All values are
 * validated first: one bad value refuses the whole batch. Within a batch a
 * later item for the same key wins. After a crash a batch may survive as a
 * prefix of its entries (each entry is whole or absent).
 */
SIMDR_API int simdr_put_batch(simdr_store *store, const simdr_kv *items, size_t n,
                              uint64_t *tail_out);
SIMDR_API int simdr_put_batch_hashed(simdr_store *store, const simdr_hashed_kv *items,
                                     size_t n, uint64_t *tail_out);

/**
 * Puts and deletes in one append, as simdr_put_batch: an item whose value is
 * NULL with value_len 0 appends a tombstone for its key (a delete), every
 * other item is a put. What a caller needs done together (a rename: the new
 * key's value and the old key's delete) is refused together when the store
 * refuses the write (a full disk): nothing is kept. A later item for the same
 * key wins. A delete appends its tombstone whether or not the key is present
 * (harmless; simdr_delete_batch skips absent keys instead).
 */
SIMDR_API int simdr_write_batch(simdr_store *store, const simdr_kv *items, size_t n,
                                uint64_t *tail_out);
SIMDR_API int simdr_write_batch_hashed(simdr_store *store, const simdr_hashed_kv *items,
                                       size_t n, uint64_t *tail_out);

/**
 * Stream source: fill buf with up to cap bytes; return the count, 0 at end of
 * input, or a negative value on error (the write then fails with
 * SIMDR_ESOURCE and nothing is kept).
 *
 * The source runs while the store's writer lock is held. It may read the
 * store (get, iterate); a write, simdr_sync() or simdr_compact() on the same
 * store from inside the source returns SIMDR_EINVAL ("re-entrant call")
 * instead of waiting for that lock forever. Handing such a call to another
 * thread and waiting for it inside the source still deadlocks (it cannot be
 * told apart from an ordinary writer).
 */
typedef int64_t (*simdr_read_fn)(void *ctx, void *buf, size_t cap);

/** Appends a value read from fn until it returns 0; constant memory, CRC
 *  computed as it streams. */
SIMDR_API int simdr_put_stream(simdr_store *store, const void *key, size_t key_len,
                               simdr_read_fn fn, void *ctx, uint64_t *tail_out);
SIMDR_API int simdr_put_stream_hashed(simdr_store *store, uint64_t key_hash,
                                      simdr_read_fn fn, void *ctx, uint64_t *tail_out);

/** Appends a value read from fd until end of file (pipes, sockets, files).
 *  A non-blocking descriptor with no data yet is waited on (poll), not
 *  taken for a failed input.
 *  SIMDR_EINVAL, nothing appended, when fd is the store file itself (by any
 *  path): it would grow with every chunk appended and never end. */
SIMDR_API int simdr_put_fd(simdr_store *store, const void *key, size_t key_len, int fd,
                           uint64_t *tail_out);

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */
/*                                                                           */
/* Damaged values: with verify_reads = 1 (the default) every call that hands */
/* out a value checks its CRC-32 first: simdr_get(_hashed), simdr_get_last,  */
/* simdr_get_copy, simdr_get_batch(_hashed), simdr_exists, the iterators and */
/* simdr_for_each(_parallel) answer SIMDR_ECORRUPT for a value whose bytes   */
/* no longer match their checksum, and hand out none of them. A value of up  */
/* to 1 MiB is checked in place; a larger one a MiB at a time, the pages it  */
/* read dropped from the process again, so the check never leaves a huge    */
/* value resident (it does read the value once more than the caller does).   */
/* With verify_reads = 0 lookups skip the check; simdr_entry_verify checks a */
/* handle, and simdr_entry_chunk checks an unchecked handle before it hands  */
/* out the chunk that ends the value (SIMDR_ECHECKSUM). simdr_copy,          */
/* simdr_move and simdr_rename check the source whatever the option says:    */
/* damaged bytes are never written again under a fresh checksum.             */
/* ------------------------------------------------------------------------ */

/**
 * Finds the newest value of key. On SIMDR_OK *out is a new entry handle the
 * caller releases with simdr_entry_release(). SIMDR_NOTFOUND if the key was
 * never written or is deleted; SIMDR_ECORRUPT (and *out NULL) if its newest
 * entry is damaged: its metadata no longer holds the key, or (verify_reads)
 * its value fails its CRC. Never waits for a writer.
 * Lifetime: simdr_entry_data() points into the map and stays valid until the
 * entry is released, whatever else happens to the store.
 */
SIMDR_API int simdr_get(simdr_store *store, const void *key, size_t key_len, simdr_entry **out);
SIMDR_API int simdr_get_hashed(simdr_store *store, uint64_t key_hash, simdr_entry **out);

/** 1 if key is present, 0 if absent or deleted, negative on error: agrees
 *  with simdr_get (SIMDR_ECORRUPT when the newest entry's metadata or, with
 *  verify_reads, its value is damaged; the check reads the value). */
SIMDR_API int simdr_exists(simdr_store *store, const void *key, size_t key_len);

/**
 * Copying read: copies the newest value into buf if it fits. *value_len
 * always receives the value's size; SIMDR_ETOOBIG when cap is too small (buf
 * untouched), SIMDR_NOTFOUND when absent, SIMDR_ECORRUPT when damaged (buf
 * untouched).
 */
SIMDR_API int simdr_get_copy(simdr_store *store, const void *key, size_t key_len, void *buf,
                             size_t cap, size_t *value_len);

typedef struct simdr_key {
    const void *key;
    size_t key_len;
} simdr_key;

/**
 * Reads n keys at once (lookups overlap their memory accesses). out[i] is a
 * new entry (release each) or NULL when keys[i] is absent. Returns the number
 * of keys found (>= 0) or a negative error (then every out[i] is NULL); one
 * damaged entry among the keys makes the call SIMDR_ECORRUPT.
 * Entries of one call share their memory in groups of up to 256: one entry
 * kept after the others of its group were released keeps about 22 KB.
 */
SIMDR_API int64_t simdr_get_batch(simdr_store *store, const simdr_key *keys, size_t n,
                                  simdr_entry **out);

/** As simdr_get_batch with key hashes. */
SIMDR_API int64_t simdr_get_batch_hashed(simdr_store *store, const uint64_t *key_hashes,
                                         size_t n, simdr_entry **out);

/**
 * Read scopes: gets without a handle, a heap allocation or a map pin each
 * (LMDB's read transactions work alike). simdr_read_begin opens a scope in
 * caller-owned storage; simdr_read_get then answers like simdr_get but hands
 * out a pointer and a size; simdr_read_end closes the scope.
 * Lifetime: every pointer a scope handed out stays valid until
 * simdr_read_end, whatever writers, growth or compaction do meanwhile, and
 * not a moment longer (use simdr_get for a reference that must outlive it).
 * A scope is not a snapshot: each get sees the newest value of its key.
 * Rules: a scope belongs to the thread that began it (end it there); keep
 * it short, since a writer that replaces the map or index (growth,
 * compaction, refresh) waits for the scopes open at that moment; inside a
 * scope, writes, simdr_sync and simdr_compact on the same store return
 * SIMDR_EINVAL (they could wait for the scope itself); simdr_refresh and
 * simdr_close on that store must not be called there (they would wait for it). Scopes of one thread may nest and may span several stores.
 */
#define SIMDR_HAS_READ_SCOPE 1 /* this header declares the read scope calls */
typedef struct simdr_read {
    void *opaque_[4]; /* private */
} simdr_read;

/** Opens a scope on store in *scope. SIMDR_OK, or SIMDR_EINVAL for NULL. */
SIMDR_API int simdr_read_begin(simdr_store *store, simdr_read *scope);
/** The newest value of key: *value and *value_len (valid until the scope
 *  ends). SIMDR_OK, SIMDR_NOTFOUND, or SIMDR_ECORRUPT as simdr_get (the CRC
 *  is checked when verify_reads is on). */
SIMDR_API int simdr_read_get(simdr_read *scope, const void *key, size_t key_len,
                             const void **value, size_t *value_len);
SIMDR_API int simdr_read_get_hashed(simdr_read *scope, uint64_t key_hash, const void **value,
                                    size_t *value_len);
/** n gets at once (their memory accesses overlap, as in simdr_get_batch):
 *  values[i] and value_lens[i] receive key i's value, or NULL and 0 when
 *  it is absent. Returns the number found, or a negative error (then every
 *  values[i] is NULL): one damaged entry makes the call SIMDR_ECORRUPT. */
SIMDR_API int64_t simdr_read_get_batch(simdr_read *scope, const simdr_key *keys, size_t n,
                                       const void **values, size_t *value_lens);
/** Closes the scope; its pointers are no longer valid. */
SIMDR_API void simdr_read_end(simdr_read *scope);

/**
 * The last entry in the file, whatever its key, tombstones included
 * (simdr_entry_is_tombstone). SIMDR_NOTFOUND for an empty store.
 */
SIMDR_API int simdr_get_last(simdr_store *store, simdr_entry **out);

/** Releases an entry; NULL is a no-op. Pointers from it become invalid. */
SIMDR_API void simdr_entry_release(simdr_entry *entry);

/** A second handle to the same entry (for keeping one yielded by an iterator). */
SIMDR_API int simdr_entry_dup(const simdr_entry *entry, simdr_entry **out);

/** The payload, zero-copy (lifetime rule above). 64-byte aligned in the
 *  aligned layout. */
SIMDR_API const void *simdr_entry_data(const simdr_entry *entry);
SIMDR_API uint64_t simdr_entry_size(const simdr_entry *entry);
SIMDR_API uint64_t simdr_entry_key_hash(const simdr_entry *entry);
SIMDR_API uint32_t simdr_entry_checksum(const simdr_entry *entry);
/** File offset of the payload's first byte. */
SIMDR_API uint64_t simdr_entry_offset(const simdr_entry *entry);
/** File offset just past the entry's metadata (the tail after it was written). */
SIMDR_API uint64_t simdr_entry_end(const simdr_entry *entry);
/** File offset where the entry begins: the previous entry's end (prev_offset). */
SIMDR_API uint64_t simdr_entry_start(const simdr_entry *entry);
SIMDR_API int simdr_entry_is_tombstone(const simdr_entry *entry);

/** SIMDR_OK if the payload's CRC-32 matches the stored checksum, else
 *  SIMDR_ECHECKSUM. */
SIMDR_API int simdr_entry_verify(const simdr_entry *entry);

/**
 * Chunked access for values too big to touch at once: *ptr and *len describe
 * bytes [offset, offset + *len) of the payload, *len <= max, zero-copy
 * (lifetime rule above). With advise_done = 1 the whole pages of the chunk
 * before offset (the max bytes before it, as a sequential reader with a fixed
 * max just consumed) are dropped from memory. SIMDR_NOTFOUND when
 * offset >= size. SIMDR_ECHECKSUM (and no chunk) when the chunk asked for
 * ends the value and the handle was not checked at lookup (verify_reads = 0)
 * and the value does not match its CRC.
 */
SIMDR_API int simdr_entry_chunk(const simdr_entry *entry, uint64_t offset, size_t max,
                                const void **ptr, size_t *len, int advise_done);

/* ------------------------------------------------------------------------ */
/* Deleting, renaming, copying between stores                                */
/* ------------------------------------------------------------------------ */

/** Appends a tombstone. SIMDR_NOTFOUND (nothing appended) if key is absent. */
SIMDR_API int simdr_delete(simdr_store *store, const void *key, size_t key_len,
                           uint64_t *tail_out);

/** Deletes the present keys among keys[0..n) in one append; absent ones are
 *  skipped. *deleted (may be NULL) receives how many were deleted. */
SIMDR_API int simdr_delete_batch(simdr_store *store, const simdr_key *keys, size_t n,
                                 size_t *deleted, uint64_t *tail_out);

/** Stores old_key's value under new_key and deletes old_key. SIMDR_EINVAL when
 *  the keys are equal, SIMDR_NOTFOUND when old_key is absent. */
SIMDR_API int simdr_rename(simdr_store *store, const void *old_key, size_t old_len,
                           const void *new_key, size_t new_len, uint64_t *tail_out);

/** Appends key's newest value to dst (same key hash). SIMDR_EINVAL if dst is
 *  the same file as src; SIMDR_ECORRUPT, copying nothing, if the value fails
 *  its checksum (the copy would carry a fresh, valid one). tail_out receives
 *  dst's new tail. */
SIMDR_API int simdr_copy(simdr_store *src, const void *key, size_t key_len, simdr_store *dst,
                         uint64_t *tail_out);

/** simdr_copy, then deletes key from src. tail_out receives src's new tail.
 *  SIMDR_EREADONLY, before anything is copied, if either store is read-only.
 *  src's writes wait while a move runs, so a concurrent put of the same key
 *  is either the value moved or stays in src. */
SIMDR_API int simdr_move(simdr_store *src, const void *key, size_t key_len, simdr_store *dst,
                         uint64_t *tail_out);

/* ------------------------------------------------------------------------ */
/* Size and statistics                                                       */
/* ------------------------------------------------------------------------ */

/** Number of live keys, O(1). */
SIMDR_API uint64_t simdr_count(simdr_store *store);
SIMDR_API int simdr_is_empty(simdr_store *store);
/** Valid length of the file (the tail offset). */
SIMDR_API uint64_t simdr_file_size(simdr_store *store);
/** Bytes a compaction would remove now (exact for the store's layout). */
SIMDR_API uint64_t simdr_compaction_savings(simdr_store *store);
/** The layout of the file (detected for existing files). */
SIMDR_API int simdr_layout_of(simdr_store *store);
/** The path the store was opened with (for a symbolic link, the path of the
 *  file it names: the store's other files and its compaction go by that
 *  file). Valid until simdr_close(). */
SIMDR_API const char *simdr_path(simdr_store *store);
/** Bytes the in-memory index occupies now. */
SIMDR_API uint64_t simdr_index_bytes(simdr_store *store);
/**
 * Unmaps from this process the pages of the store file it has mapped in:
 * pages read through the map, and the pages an index growth reads (a
 * growth reads every indexed entry's metadata, so after a bulk load the
 * whole file counts in the process's resident memory). The pages stay in
 * the page cache, and later reads map them back, unchanged, with a minor
 * fault; entries, read scopes and iterators stay valid. For a process
 * whose resident size matters, after a bulk load or a scan (simdr-server
 * calls it after each index growth). Any thread; SIMDR_OK, or SIMDR_EINVAL
 * for NULL. simdr_compaction_savings unmaps the pages its walk mapped.
 */
SIMDR_API int simdr_release_memory(simdr_store *store);

/* ------------------------------------------------------------------------ */
/* Iteration                                                                 */
/* ------------------------------------------------------------------------ */

/**
 * Iterates live entries of a snapshot taken when the iterator is opened:
 * the newest version of each key once, newest entries first, tombstones and
 * deleted keys skipped. Entries appended later are not seen. The iterator
 * keeps its snapshot valid across compaction.
 */
SIMDR_API int simdr_iter_open(simdr_store *store, simdr_iter **out);

/**
 * Advances. On SIMDR_OK *entry is borrowed: valid until the next call or
 * simdr_iter_close() (keep it with simdr_entry_dup). SIMDR_NOTFOUND at end.
 * SIMDR_ECORRUPT: the next live key's newest entry is damaged (its bytes
 * cannot be an entry of this layout, or, with verify_reads, its value fails
 * its CRC; simdr_get reports the same for that key); the iterator has moved
 * past it, so calling again continues with the remaining entries.
 */
SIMDR_API int simdr_iter_next(simdr_iter *iter, const simdr_entry **entry);
SIMDR_API void simdr_iter_close(simdr_iter *iter);

/**
 * The live keys whose 64-bit hashes (simdr_hash_key) have their low 32 bits
 * in [from, to), where from < to <= 2^32: their hashes go to out, at most cap
 * of them, in no particular order. Returns how many there are (when more
 * than cap, only cap were stored: ask again with a narrower range), or a
 * negative error: SIMDR_EINVAL, SIMDR_ECORRUPT when an index slot of the
 * range no longer names metadata holding its key's hash, or when a block of
 * an index loaded from the hint file is damaged and this handle cannot
 * rebuild it from the file at once (a writable handle does, as its next
 * write would, unless its writer lock is busy or the call is inside a read
 * scope of the store: that one call then waits, as a write would, for read
 * scopes of other threads; a read-only handle does not until reopened).
 * The index is
 * ordered by those bits, so a call reads only the range's share of the
 * table (and each key's metadata): a cursor that steps through the range
 * [0, 2^32) a piece at a time visits a store of any size without a
 * snapshot, a key present throughout exactly once, across writes, growth
 * and compaction (simdr-server's SCAN). A key written meanwhile may or may
 * not be seen. Readers never wait; keep each range small, since a writer
 * that replaces the index waits for the call.
 */
SIMDR_API int64_t simdr_hashes_in_range(simdr_store *store, uint64_t from, uint64_t to,
                                        uint64_t *out, size_t cap);

/** Callback for simdr_for_each*: return 0 to go on, non-zero to stop (the
 *  call then returns SIMDR_ESTOPPED). entry is borrowed for the call. */
typedef int (*simdr_visit_fn)(void *ctx, const simdr_entry *entry);

/** Calls fn for every live entry of a snapshot, on the calling thread. */
SIMDR_API int simdr_for_each(simdr_store *store, simdr_visit_fn fn, void *ctx);

/** Calls fn for every live entry on nthreads threads (0 = number of CPUs);
 *  fn must be thread-safe. Order is unspecified. A damaged entry stops the
 *  visit with SIMDR_ECORRUPT (simdr_for_each stops there too; use an
 *  iterator to go on past it). */
SIMDR_API int simdr_for_each_parallel(simdr_store *store, unsigned nthreads, simdr_visit_fn fn,
                                      void *ctx);

/* ------------------------------------------------------------------------ */
/* Maintenance                                                               */
/* ------------------------------------------------------------------------ */

/**
 * Rewrites the file with only the newest live entry of each key: a new file
 * beside it is written, fdatasynced, renamed over the old one, and the
 * directory fsynced. A crash leaves the complete old or the complete new
 * file. The store keeps working on the new file; entries held stay valid;
 * readers are never blocked. Not allowed on read-only stores. A failure
 * before the rename leaves the store as it was; when the directory cannot
 * be synced after it, the handle stays on the old file in the failed state
 * (see simdr_sync): the error is returned and writes and syncs answer
 * SIMDR_EFAILED until reopen, since a power cut could still bring the old
 * file back (a reopen finds the new one, or after such a power cut the old).
 * Writers and syncs are not stopped for the copy: puts and deletes made
 * while it runs are copied after it, and only the last of those catch-ups and
 * the switch hold the store's writer lock (a write waits for that moment
 * only). One compaction runs at a time: a second call waits for the first.
 */
SIMDR_API int simdr_compact(simdr_store *store);

/**
 * simdr_compact that its caller can stop: should_stop(ctx) is called on the
 * compacting thread between steps (every few thousand entries of the copy,
 * before each catch-up round, before the new file is synced, indexed and
 * switched to; never with the writer lock held, and not once the switch has
 * begun). When it returns non-zero the compaction stops: the new file is
 * removed, the store stays on its old file, untouched, and SIMDR_ESTOPPED is
 * returned. This is how another thread ends a long compaction that would
 * otherwise hold it up (a server emptying a database, or shutting down); a
 * flag that thread sets is what should_stop usually reads. should_stop NULL:
 * as simdr_compact.
 */
SIMDR_API int simdr_compact_stoppable(simdr_store *store, int (*should_stop)(void *ctx),
                                      void *ctx);

/** A problem found by simdr_check. */
typedef struct simdr_check_issue {
    uint64_t offset;   /**< file offset of the entry's first byte */
    uint64_t end;      /**< offset just past its metadata */
    uint64_t key_hash;
    int code;          /**< SIMDR_ECHECKSUM or SIMDR_ECORRUPT */
    const char *what;  /**< short description */
} simdr_check_issue;

typedef struct simdr_check_report {
    uint64_t entries;     /**< entries in the chain */
    uint64_t bad_entries; /**< entries with a problem */
    uint64_t bytes_checked;
} simdr_check_report;

/** Called for each problem found; return non-zero to stop. */
typedef int (*simdr_check_fn)(void *ctx, const simdr_check_issue *issue);

/**
 * Verifies every entry of the chain up to the store's tail: links, bounds,
 * CRC-32. A read-only store also reports the bytes its open found beyond the
 * valid chain (a torn tail it skipped) unless they are all zero
 * (simdr_recovery_info.zeros_only: no entry was there) or no longer in the
 * file (a writer's open cut them, or left only zeros there); bytes another thread
 * or process is appending are never reported. Returns SIMDR_OK when the store is sound,
 * SIMDR_ECORRUPT when any problem was found (each reported through fn, which
 * may be NULL). report may be NULL.
 */
SIMDR_API int simdr_check(simdr_store *store, simdr_check_fn fn, void *ctx,
                          simdr_check_report *report);

/* ------------------------------------------------------------------------ */
/* Replication: the file is its own log                                      */
/*                                                                           */
/* A replica is a byte-for-byte prefix of its primary's file: it asks for    */
/* the primary's bytes from its own tail (simdr_log_read on the primary) and */
/* appends them (simdr_log_append), which checks that they chain onto its    */
/* tail, entry by entry, before anything is written. A compaction, FLUSH or  */
/* any replacement of the primary's file changes the file's identity: the    */
/* replica then starts over from an empty store, or, after a compaction,     */
/* rebuilds the new file's prefix from its own copy of the old file          */
/* (simdr_log_origin, simdr_log_compact_prefix) and follows it from there.   */
/* ------------------------------------------------------------------------ */

typedef struct simdr_log_state {
    uint64_t identity;     /**< names this file: XXH3-64 of its device, inode and birth
                                time; a compaction (a new file) changes it, appends do not.
                                Never 0 */
    uint64_t tail;         /**< the committed tail: every byte below it is acknowledged */
    int layout;            /**< SIMDR_LAYOUT_* of the file */
    uint8_t tail_meta[20]; /**< the 20 metadata bytes ending at tail (zeros when empty) */
} simdr_log_state;

/** Fills *out for the store's current file. Errors: SIMDR_EINVAL, SIMDR_EIO. */
SIMDR_API int simdr_log_info(simdr_store *store, simdr_log_state *out);

/**
 * Copies the store's bytes [from, end) into buf: whole entries only, end the
 * highest entry end <= from + cap and <= the committed tail (walking the
 * chain down from the tail, so a call costs the entries above end). from is
 * the end of an entry (0, or a tail the reader got before); an offset inside
 * an entry is refused (SIMDR_EINVAL) when the walk passes it, and otherwise
 * simdr_log_append on the other side refuses bytes that do not start an
 * entry there. *len_out = end - from (0 when from is the tail).
 * identity must be the file's (simdr_log_info), else SIMDR_ENOENT ("the file
 * was replaced", e.g. compacted: start over) and nothing is copied.
 * SIMDR_ETOOBIG when the first entry after from does not fit in cap:
 * *len_out then receives the room it needs. SIMDR_EINVAL when from is beyond
 * the tail (or NULL arguments).
 */
SIMDR_API int simdr_log_read(simdr_store *store, uint64_t identity, uint64_t from, void *buf,
                             size_t cap, size_t *len_out);

/**
 * The 20 metadata bytes ending at end (a replica's tail) in the file named by
 * identity: a replica resumes only when the primary's bytes there equal its
 * own. SIMDR_ENOENT when identity is not the file's, SIMDR_EINVAL when end is
 * beyond the tail or below 21.
 */
SIMDR_API int simdr_log_meta_at(simdr_store *store, uint64_t identity, uint64_t end,
                                uint8_t meta[20]);

/**
 * Appends len raw bytes of another store's log, which must continue this
 * store's file exactly: they start at from, which must be this store's tail,
 * and are whole entries, each linking to the end of the one before (the
 * first to from), with zero padding in this store's layout and a payload
 * matching its CRC-32. Everything is checked before anything is written;
 * then the entries are written with one append and indexed, all or nothing,
 * and the file ends at from + len, byte for byte as the source.
 * Errors: SIMDR_ECORRUPT (a wrong link, bad CRC, torn or trailing bytes,
 * bytes of another file; or from is not the tail), SIMDR_EREADONLY, the
 * write errors of simdr_put. len 0 is a no-op.
 */
SIMDR_API int simdr_log_append(simdr_store *store, uint64_t from, const void *bytes, size_t len,
                               uint64_t *tail_out);

/** Where a compacted file came from (simdr_log_origin). A compaction lists
 *  the live entries (the newest entry of each key that is not a delete) at
 *  the old file's tail old_tail and copies them in file order, relinked, as
 *  the new file's [0, prefix_len); the puts and deletes made during the copy
 *  follow from prefix_len on. That prefix depends only on the old file's
 *  bytes [0, old_tail) and the layout, so a byte copy of the old file up to
 *  old_tail or beyond rebuilds it (simdr_log_compact_prefix). */
typedef struct simdr_log_origin_info {
    uint64_t identity;     /**< the current file (simdr_log_state.identity) */
    uint64_t old_identity; /**< the file it was compacted from */
    uint64_t old_tail;     /**< the old file's tail the live entries were listed at */
    uint64_t prefix_len;   /**< bytes of the new file copied from [0, old_tail) */
    uint64_t prefix_hash;  /**< XXH3-64 of the new file's bytes [0, prefix_len) */
    int layout;            /**< SIMDR_LAYOUT_* of both files */
} simdr_log_origin_info;

/**
 * Fills *out when the store's current file was written by a compaction
 * (simdr_compact) through this handle. Kept in memory only: after a reopen,
 * or when the file was replaced since, SIMDR_ENOENT (a replica then copies
 * the file whole). Errors: SIMDR_EINVAL (NULL arguments), SIMDR_ENOENT.
 */
SIMDR_API int simdr_log_origin(simdr_store *store, simdr_log_origin_info *out);

/**
 * Writes to dest_path (created, or truncated when it exists; the file is
 * fsynced, its directory is not) what simdr_compact writes as the new
 * file's prefix when it lists the live entries at tail upto: the newest
 * entry of each key below upto that is not
 * a delete, in file order, relinked and padded for the store's layout. Every
 * entry copied is verified as simdr_compact verifies it. *size_out receives
 * the bytes written and *hash_out their XXH3-64, as simdr_log_origin reports
 * them for the compaction that listed its entries at upto (either may be
 * NULL). The store is not modified; readers and writers go on meanwhile,
 * and a compaction of the store waits for the call (as the call waits for
 * one in flight). Thread-safe like a read; refused (SIMDR_EINVAL) inside a
 * read scope or a stream source of the same store, and on a handle
 * inherited across fork.
 * identity must be the current file's (simdr_log_info), else SIMDR_ENOENT.
 * upto must be the end of an entry (or 0) no higher than the committed tail,
 * else SIMDR_EINVAL. SIMDR_EINVAL, nothing written, when dest_path is the
 * store file itself (by any path), its side file or its hint file. SIMDR_ECORRUPT when an entry below upto is damaged
 * (dest_path is then removed); SIMDR_EIO, SIMDR_ENOSPC, SIMDR_EACCES when
 * dest_path cannot be written (removed too); SIMDR_ENOMEM.
 */
SIMDR_API int simdr_log_compact_prefix(simdr_store *store, uint64_t identity, uint64_t upto,
                                       const char *dest_path, uint64_t *size_out,
                                       uint64_t *hash_out);

#ifdef __cplusplus
}
#endif

#endif /* SIMDR_H */
