/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/**
 * \file
 * VDE3 source compatibility for cbslot's context and event API.
 *
 * Code written against VDE3's own headers (`#include <vde3.h>`, `#include <vde3/context.h>`) compiles
 * against cbslot by putting this directory first on the include path:
 *
 *     cc -I"$(pkg-config --variable=includedir cbslot)/cbslot-vde3" $(pkg-config --cflags --libs cbslot) ...
 *
 * It gives VDE3's names for the context/event part only: `event_cb`, `vde_event_handler`, `vde_context`,
 * `VDE_EV_*`, `vde_context_new/init/fini/delete` and `vde_context_event_add/event_del/timeout_add/
 * timeout_del` (cbslot exports these under VDE3's own names and argument orders, so nothing is mapped by
 * macro). VDE3's component system (components, transports, engines, connection managers, modules,
 * configuration, logging) is not provided. Where cbslot's behaviour differs from VDE3's, cbslot's README
 * lists it ("VDE3 source compatibility").
 */
#ifndef CBSLOT_VDE3_COMPAT_H
#define CBSLOT_VDE3_COMPAT_H

#include <cbslot.h>

/* what VDE3's <vde3.h> brings in with it */
#include <stdarg.h>
#include <sys/types.h>
#include <syslog.h>

/** VDE3's name for the event callback type ::vde_event_cb (a later VDE3 fork, and cbslot, use that name). */
typedef vde_event_cb event_cb;

#endif
