// C side of the callbacks: trampolines with libnbd's exact callback signatures that forward
// to the Go functions exported in callbacks.go, and wrappers that build the callback structs.
#include <stdint.h>
#include <stdlib.h>
#include <libnbd.h>
#include "_cgo_export.h"

static int extent_trampoline(void *user, const char *metacontext, uint64_t offset,
                             uint32_t *entries, size_t nr_entries, int *error) {
  return goExtentCallback((uintptr_t)user, (char *)metacontext, offset, entries, nr_entries, error);
}

static int list_trampoline(void *user, const char *name, const char *description) {
  return goListCallback((uintptr_t)user, (char *)name, (char *)description);
}

static int context_trampoline(void *user, const char *name) {
  return goListCallback((uintptr_t)user, (char *)name, NULL);
}

static int chunk_trampoline(void *user, const void *subbuf, size_t count, uint64_t offset,
                            unsigned status, int *error) {
  if (!user) return 0;
  return goChunkCallback((uintptr_t)user, offset, count, status, error);
}

static void free_trampoline(void *user) { goFreeCallback((uintptr_t)user); }

int qnbd_block_status(struct nbd_handle *h, uint64_t count, uint64_t offset, uintptr_t user,
                      uint32_t flags) {
  nbd_extent_callback cb = {
      .callback = extent_trampoline, .user_data = (void *)user, .free = free_trampoline};
  return nbd_block_status(h, count, offset, cb, flags);
}

int qnbd_pread_structured(struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
                          uintptr_t user, uint32_t flags) {
  nbd_chunk_callback cb = {.callback = chunk_trampoline,
                           .user_data = (void *)user,
                           .free = user ? free_trampoline : NULL};
  return nbd_pread_structured(h, buf, count, offset, cb, flags);
}

int qnbd_opt_list(struct nbd_handle *h, uintptr_t user) {
  nbd_list_callback cb = {
      .callback = list_trampoline, .user_data = (void *)user, .free = free_trampoline};
  return nbd_opt_list(h, cb);
}

int qnbd_opt_list_meta_context(struct nbd_handle *h, uintptr_t user) {
  nbd_context_callback cb = {
      .callback = context_trampoline, .user_data = (void *)user, .free = free_trampoline};
  return nbd_opt_list_meta_context(h, cb);
}

// The asynchronous commands get a completion callback without a function: libnbd calls its
// free function exactly once, when the command is retired (or the call fails), which is when
// the Go buffer may be unpinned.
static nbd_completion_callback retire_cb(uintptr_t user) {
  nbd_completion_callback cb = {
      .callback = NULL, .user_data = (void *)user, .free = user ? free_trampoline : NULL};
  return cb;
}

int64_t qnbd_aio_pread(struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
                       uintptr_t user, uint32_t flags) {
  return nbd_aio_pread(h, buf, count, offset, retire_cb(user), flags);
}

int64_t qnbd_aio_pwrite(struct nbd_handle *h, const void *buf, size_t count, uint64_t offset,
                        uintptr_t user, uint32_t flags) {
  return nbd_aio_pwrite(h, buf, count, offset, retire_cb(user), flags);
}

int64_t qnbd_aio_flush(struct nbd_handle *h, uint32_t flags) {
  return nbd_aio_flush(h, NBD_NULL_COMPLETION, flags);
}

int64_t qnbd_aio_trim(struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags) {
  return nbd_aio_trim(h, count, offset, NBD_NULL_COMPLETION, flags);
}

int64_t qnbd_aio_zero(struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags) {
  return nbd_aio_zero(h, count, offset, NBD_NULL_COMPLETION, flags);
}
