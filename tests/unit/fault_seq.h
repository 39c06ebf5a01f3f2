/*
 * fault_seq.h - a fault layer for tests that counts the library's system
 * calls across every operation of the I/O table (src/io.h) and fails call
 * number n, or every call from n on (a device gone). io.h's own rules count
 * the calls of one operation; sweeping "each call an API function makes, in
 * turn" needs one count over all of them.
 *
 * A failed write first moves half its bytes, as a device that wrote part of
 * it would; a failed mmap is ENOMEM, any other failure EIO.
 */
#ifndef SIMDR_FAULT_SEQ_H
#define SIMDR_FAULT_SEQ_H

#include <stdint.h>

#include "io.h"

/* Installs the layer: counting only (n = 0), failing call n, or with
 * every_after also every call after it. */
void fault_seq_on(uint64_t n, int every_after);
/* Restores the system calls. */
void fault_seq_off(void);
/* Calls counted since fault_seq_on. */
uint64_t fault_seq_calls(void);
/* The operation (enum simdr__io_op) whose call n failed, or -1 if the run
 * made fewer calls. */
int fault_seq_injected_op(void);
/* "pwrite", "pwritev", ...: enum simdr__io_op's names. */
extern const char *const fault_seq_op_names[SIMDR__IO_OPS];

#endif
