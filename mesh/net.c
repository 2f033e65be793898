// The mesh data plane's system calls and vector loops, compiled at load by Bun's built-in
// TinyCC (bun:ffi cc; mesh/net.ts), so no system compiler or headers are needed: the libc
// prototypes and Linux x86-64 constants are declared here. Sockets are non-blocking; every
// call returns its result or -errno. The transport worker drives them from one poll() loop
// (mesh/reactor.ts), and the kernel copies payloads straight between the socket and the
// caller's SharedArrayBuffer (no runtime socket layer, no intermediate buffers).
typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned int u32;
typedef unsigned long u64;

struct iovec { void *base; size_t len; };
struct msghdr { void *name; u32 namelen; struct iovec *iov; size_t iovlen; void *control; size_t controllen; int flags; };

int socket(int, int, int);
int bind(int, const void *, u32);
int listen(int, int);
int accept4(int, void *, u32 *, int);
int connect(int, const void *, u32);
int shutdown(int, int);
int close(int);
int setsockopt(int, int, int, const void *, u32);
int getsockopt(int, int, int, void *, u32 *);
int getsockname(int, void *, u32 *);
ssize_t send(int, const void *, size_t, int);
ssize_t sendmsg(int, const struct msghdr *, int);
ssize_t recv(int, void *, size_t, int);
ssize_t read(int, void *, size_t);
ssize_t write(int, const void *, size_t);
int poll(void *, u64, int);
int eventfd(u32, int);
int *__errno_location(void);

#define SOCK_STREAM 1
#define SOCK_NONBLOCK 04000
#define SOCK_CLOEXEC 02000000
#define SOL_SOCKET 1
#define SO_REUSEADDR 2
#define SO_ERROR 4
#define IPPROTO_TCP 6
#define TCP_NODELAY 1
#define MSG_DONTWAIT 0x40
#define MSG_NOSIGNAL 0x4000
#define SHUT_WR 1
#define EINTR 4

static int err(void) { return -*__errno_location(); }

/** A non-blocking, close-on-exec TCP socket of `family` (2 AF_INET, 10 AF_INET6). */
int nn_socket(int family) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? err() : fd;
}

/** Bind `fd` to the sockaddr at `sa` and listen. 0 or -errno. */
int nn_listen(int fd, const void *sa, int salen, int backlog) {
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4);
  if (bind(fd, sa, salen) < 0) return err();
  if (listen(fd, backlog) < 0) return err();
  return 0;
}

/** The bound port of `fd`, or -errno. */
int nn_local_port(int fd) {
  unsigned char sa[128];
  u32 len = sizeof sa;
  if (getsockname(fd, sa, &len) < 0) return err();
  return (sa[2] << 8) | sa[3]; // sin_port / sin6_port: same offset, network order
}

/** Accept one connection (non-blocking, TCP_NODELAY); its sockaddr goes to `sa` (128 B). fd or -errno. */
int nn_accept(int lfd, void *sa) {
  u32 len = 128;
  int fd = accept4(lfd, sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return err();
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, 4);
  return fd;
}

/** Start connecting: 0 when connected, -EINPROGRESS (-115) while under way, else -errno. */
int nn_connect(int fd, const void *sa, int salen) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, 4);
  return connect(fd, sa, salen) < 0 ? err() : 0;
}

/** The pending socket error (0 once a non-blocking connect succeeded), as -errno. */
int nn_sockerr(int fd) {
  int e = 0;
  u32 len = 4;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0) return err();
  return -e;
}

/** Bytes the kernel took (maybe fewer than n), or -errno (-EAGAIN: buffer full). Never SIGPIPE. */
ssize_t nn_send(int fd, const void *p, size_t n) {
  ssize_t r;
  do r = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL); while (r < 0 && *__errno_location() == EINTR);
  return r < 0 ? err() : r;
}

/** Gathered send of `cnt` iovecs {ptr u64, len u64} at `iov`: one system call per batch of frames. */
ssize_t nn_sendv(int fd, void *iov, int cnt) {
  struct msghdr m = { 0, 0, (struct iovec *)iov, (size_t)cnt, 0, 0, 0 };
  ssize_t r;
  do r = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL); while (r < 0 && *__errno_location() == EINTR);
  return r < 0 ? err() : r;
}

/** Bytes received into p (0: the peer closed), or -errno (-EAGAIN: nothing yet). */
ssize_t nn_recv(int fd, void *p, size_t n) {
  ssize_t r;
  do r = recv(fd, p, n, MSG_DONTWAIT); while (r < 0 && *__errno_location() == EINTR);
  return r < 0 ? err() : r;
}

/** poll(2) over `n` struct pollfd {i32 fd; i16 events; i16 revents}; EINTR counts as 0 ready. */
int nn_poll(void *fds, int n, int timeout_ms) {
  int r = poll(fds, (u64)n, timeout_ms);
  if (r < 0) return *__errno_location() == EINTR ? 0 : err();
  return r;
}

int nn_shutdown_wr(int fd) { return shutdown(fd, SHUT_WR) < 0 ? err() : 0; }
int nn_close(int fd) { return close(fd) < 0 ? err() : 0; }

/** An eventfd another thread writes to wake the poll loop (EFD_NONBLOCK | EFD_CLOEXEC). */
int nn_eventfd(void) {
  int fd = eventfd(0, 04000 | 02000000);
  return fd < 0 ? err() : fd;
}
int nn_wake(int efd) {
  u64 one = 1;
  return write(efd, &one, 8) < 0 ? err() : 0;
}
int nn_drain(int efd) {
  u64 v;
  return read(efd, &v, 8) < 0 ? err() : 0;
}

// ---- f32 reductions (SSE on x86-64: TinyCC does not vectorise, so the loop is written in
// asm; plain C elsewhere). The constants above are the Linux generic ones (x86-64, arm64). ----
// IEEE single add/divide with the default MXCSR (round to nearest, no flush-to-zero) gives
// the same bits as the JS `Math.fround(a + b)` reference: the reduction order and results
// are unchanged, only faster.

/** d[i] = a[i] + b[i], i < n (d may alias a or b). */
void nn_add_f32(float *d, const float *a, const float *b, u64 n) {
  u64 q = n >> 3;
#if defined(__x86_64__)
  if (q) {
    __asm__ volatile(
      "1:\n"
      "movups (%%rsi), %%xmm0\n"
      "movups 16(%%rsi), %%xmm1\n"
      "movups (%%rdx), %%xmm2\n"
      "movups 16(%%rdx), %%xmm3\n"
      "addps %%xmm2, %%xmm0\n"
      "addps %%xmm3, %%xmm1\n"
      "movups %%xmm0, (%%rdi)\n"
      "movups %%xmm1, 16(%%rdi)\n"
      "add $32, %%rsi\n"
      "add $32, %%rdx\n"
      "add $32, %%rdi\n"
      "dec %%rcx\n"
      "jnz 1b\n"
      : "+D"(d), "+S"(a), "+d"(b), "+c"(q) : : "memory", "cc");
  }
#else
  for (u64 i = 0; i < q * 8; i++) d[i] = a[i] + b[i];
  d += q * 8, a += q * 8, b += q * 8;
#endif
  for (u64 i = 0; i < (n & 7); i++) d[i] = a[i] + b[i];
}

/** d[i] = (a[i] + b[i]) / k (the sum rounded to f32 first, then one division), i < n. */
void nn_add_div_f32(float *d, const float *a, const float *b, u64 n, float k) {
  float kk[4] = { k, k, k, k };
  u64 q = n >> 2;
#if defined(__x86_64__)
  if (q) {
    __asm__ volatile(
      "movups (%4), %%xmm4\n"
      "1:\n"
      "movups (%%rsi), %%xmm0\n"
      "movups (%%rdx), %%xmm2\n"
      "addps %%xmm2, %%xmm0\n"
      "divps %%xmm4, %%xmm0\n"
      "movups %%xmm0, (%%rdi)\n"
      "add $16, %%rsi\n"
      "add $16, %%rdx\n"
      "add $16, %%rdi\n"
      "dec %%rcx\n"
      "jnz 1b\n"
      : "+D"(d), "+S"(a), "+d"(b), "+c"(q) : "r"(kk) : "memory", "cc");
  }
#else
  for (u64 i = 0; i < q * 4; i++) {
    volatile float s = a[i] + b[i];
    d[i] = s / k;
  }
  d += q * 4, a += q * 4, b += q * 4;
#endif
  for (u64 i = 0; i < (n & 3); i++) {
    volatile float s = a[i] + b[i];
    d[i] = s / k;
  }
}

// ---- addresses ----
int inet_pton(int, const char *, void *);
const char *inet_ntop(int, const void *, char *, u32);
char *strerror(int);

/** Fill the sockaddr at `sa` (28 B) for NUL-terminated numeric `ip` of `family`; its length or -1. */
int nn_sockaddr(int family, const char *ip, int port, unsigned char *sa) {
  for (int i = 0; i < 28; i++) sa[i] = 0;
  sa[0] = family & 255;
  sa[1] = family >> 8;
  sa[2] = (port >> 8) & 255;
  sa[3] = port & 255;
  if (family == 2) return inet_pton(2, ip, sa + 4) == 1 ? 16 : -1;
  return inet_pton(10, ip, sa + 8) == 1 ? 28 : -1;
}

/** "ip" of the sockaddr at `sa` into `out` (64 B, NUL-terminated); its port, or -1. */
int nn_sockaddr_str(const unsigned char *sa, char *out) {
  int family = sa[0] | (sa[1] << 8);
  out[0] = 0;
  if (!inet_ntop(family, family == 2 ? sa + 4 : sa + 8, out, 64)) return -1;
  return (sa[2] << 8) | sa[3];
}

/** strerror(e) into `out` (128 B, NUL-terminated). */
void nn_strerror(int e, char *out) {
  const char *s = strerror(e);
  int i = 0;
  for (; s[i] && i < 127; i++) out[i] = s[i];
  out[i] = 0;
}
