/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/**
 * \file
 * VDE3 source compatibility: VDE3's `<vde3/context.h>`. cbslot declares vde_context_event_add(),
 * vde_context_event_del(), vde_context_timeout_add() (events before timeout, as in VDE3) and
 * vde_context_timeout_del() in `<cbslot.h>` as exported functions; see `<vde3.h>` in this directory. VDE3's
 * module registration and component lookup are not provided.
 */
#ifndef CBSLOT_VDE3_COMPAT_CONTEXT_H
#define CBSLOT_VDE3_COMPAT_CONTEXT_H

#include <vde3.h>

#endif
