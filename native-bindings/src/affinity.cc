// fairway_native: pin the *calling* thread to a set of CPUs.
//
// Plain C N-API (node_api.h), no node-addon-api. Linux only: it relies on
// pthread_setaffinity_np / pthread_getaffinity_np and the gettid syscall.
// There is no global state, so the module is safe to load in any number of
// worker_threads (NAPI_MODULE_INIT makes it context-aware).

#ifndef __linux__
#error "fairway_native (thread affinity) is Linux-only"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <node_api.h>

// Returns nullptr from the enclosing function if a N-API call fails; a JS
// exception is then already pending, or we raise a generic one.
#define NAPI_CALL(env, call)                                              \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      bool pending = false;                                               \
      napi_is_exception_pending((env), &pending);                         \
      if (!pending) napi_throw_error((env), nullptr, "N-API call failed: " #call); \
      return nullptr;                                                     \
    }                                                                     \
  } while (0)

static napi_value ThrowErrno(napi_env env, const char* what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s failed: %s (errno %d)", what, strerror(err), err);
  napi_throw_error(env, "ERR_FAIRWAY_AFFINITY", msg);
  return nullptr;
}

static napi_value CpuSetToArray(napi_env env, const cpu_set_t* set) {
  napi_value arr;
  NAPI_CALL(env, napi_create_array(env, &arr));
  uint32_t n = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
    if (!CPU_ISSET(cpu, set)) continue;
    napi_value v;
    NAPI_CALL(env, napi_create_uint32(env, (uint32_t)cpu, &v));
    NAPI_CALL(env, napi_set_element(env, arr, n++, v));
  }
  return arr;
}

// setThreadAffinity(cpus: number[]): void
static napi_value SetThreadAffinity(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));

  bool is_array = false;
  if (argc >= 1) NAPI_CALL(env, napi_is_array(env, argv[0], &is_array));
  if (!is_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "setThreadAffinity: cpus must be an array of CPU ids");
    return nullptr;
  }

  uint32_t len = 0;
  NAPI_CALL(env, napi_get_array_length(env, argv[0], &len));
  if (len == 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "setThreadAffinity: cpus must not be empty");
    return nullptr;
  }

  cpu_set_t wanted;
  CPU_ZERO(&wanted);
  for (uint32_t i = 0; i < len; i++) {
    napi_value el;
    napi_valuetype type;
    double d = 0;
    NAPI_CALL(env, napi_get_element(env, argv[0], i, &el));
    NAPI_CALL(env, napi_typeof(env, el, &type));
    if (type == napi_number) NAPI_CALL(env, napi_get_value_double(env, el, &d));
    if (type != napi_number || !isfinite(d) || trunc(d) != d || d < 0 || d >= CPU_SETSIZE) {
      char msg[160];
      snprintf(msg, sizeof msg,
               "setThreadAffinity: cpus[%u] must be an integer in [0, %d)", i, CPU_SETSIZE);
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
      return nullptr;
    }
    CPU_SET((int)d, &wanted);
  }

  // The kernel silently drops CPUs that are offline or outside our cpuset
  // as long as at least one requested CPU is usable (EINVAL only if none
  // is). To honour "exactly these CPUs" we read the mask back and, if it
  // differs, restore the previous one and throw.
  pthread_t self = pthread_self();
  cpu_set_t before, after;
  int err = pthread_getaffinity_np(self, sizeof before, &before);
  if (err != 0) return ThrowErrno(env, "pthread_getaffinity_np", err);
  err = pthread_setaffinity_np(self, sizeof wanted, &wanted);
  if (err != 0) return ThrowErrno(env, "pthread_setaffinity_np", err);
  err = pthread_getaffinity_np(self, sizeof after, &after);
  if (err != 0) return ThrowErrno(env, "pthread_getaffinity_np", err);
  if (!CPU_EQUAL(&after, &wanted)) {
    pthread_setaffinity_np(self, sizeof before, &before);
    napi_throw_error(env, "ERR_FAIRWAY_AFFINITY",
                     "pthread_setaffinity_np: some requested CPUs are offline or not "
                     "allowed for this process; affinity left unchanged");
    return nullptr;
  }
  return nullptr;  // undefined
}

// getThreadAffinity(): number[]
static napi_value GetThreadAffinity(napi_env env, napi_callback_info) {
  cpu_set_t set;
  int err = pthread_getaffinity_np(pthread_self(), sizeof set, &set);
  if (err != 0) return ThrowErrno(env, "pthread_getaffinity_np", err);
  return CpuSetToArray(env, &set);
}

// threadId(): number — kernel thread id (gettid), as seen in /proc/<pid>/task.
static napi_value ThreadId(napi_env env, napi_callback_info) {
  napi_value v;
  NAPI_CALL(env, napi_create_int64(env, (int64_t)syscall(SYS_gettid), &v));
  return v;
}

// threadCpuTimeNs(): number — CPU time consumed by the calling thread
// (CLOCK_THREAD_CPUTIME_ID), in nanoseconds. The cost pipeline bills compute
// by this, not by wall time, so a worker descheduled by a neighbour is not
// charged for the wait. A double holds ns exactly for ~104 days of CPU time.
static napi_value ThreadCpuTimeNs(napi_env env, napi_callback_info) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return ThrowErrno(env, "clock_gettime", errno);
  napi_value v;
  NAPI_CALL(env, napi_create_double(env, (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec, &v));
  return v;
}

// setThreadNice(n): the calling thread's nice value (Linux: per thread, by
// its tid). A service class of bulk work runs at a higher nice value so that
// the scheduler lets latency-sensitive threads sharing its CPUs (gateway,
// light classes) run first; raising nice needs no privilege, lowering it
// below the current value does (EACCES/EPERM is thrown as an Error).
static napi_value SetThreadNice(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int32_t nice = 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &nice) != napi_ok || nice < -20 || nice > 19) {
    napi_throw_type_error(env, "ERR_FAIRWAY_NICE", "setThreadNice expects an integer -20..19");
    return nullptr;
  }
  if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice) != 0) return ThrowErrno(env, "setpriority", errno);
  return nullptr;
}

// getThreadNice(): number — the calling thread's nice value.
static napi_value GetThreadNice(napi_env env, napi_callback_info) {
  errno = 0;  // getpriority may legitimately return -1
  int nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
  if (nice == -1 && errno != 0) return ThrowErrno(env, "getpriority", errno);
  napi_value v;
  NAPI_CALL(env, napi_create_int32(env, nice, &v));
  return v;
}

// setThreadName(name): the calling thread's name (pthread_setname_np; what
// /proc/<pid>/task/<tid>/comm and top -H show), cut to the kernel's 15
// bytes. Inference workers name themselves "fw:<class>": the gateway's
// background-nice sweep (src/runtime/background-nice.ts) tells them apart
// from the process's other threads by that name.
static napi_value SetThreadName(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  char name[16];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_FAIRWAY_THREAD_NAME", "setThreadName expects a string");
    return nullptr;
  }
  int err = pthread_setname_np(pthread_self(), name);
  if (err != 0) return ThrowErrno(env, "pthread_setname_np", err);
  return nullptr;
}

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
    {"setThreadAffinity", nullptr, SetThreadAffinity, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
    {"getThreadAffinity", nullptr, GetThreadAffinity, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
    {"threadId", nullptr, ThreadId, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
    {"threadCpuTimeNs", nullptr, ThreadCpuTimeNs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
    {"setThreadNice", nullptr, SetThreadNice, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
    {"getThreadNice", nullptr, GetThreadNice, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
    {"setThreadName", nullptr, SetThreadName, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
