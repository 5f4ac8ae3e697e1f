/* SPDX-License-Identifier: MIT */
/*
 * uapi constants newer than the build machine's headers. The running
 * kernel may be newer than the headers: define what is missing here, once,
 * and probe for the feature at run time (KVM_CHECK_EXTENSION).
 */
#ifndef FLIT_VMM_KVM_COMPAT_H
#define FLIT_VMM_KVM_COMPAT_H

#include <linux/kvm.h>

#ifndef KVM_CAP_DIRTY_LOG_RING
#define KVM_CAP_DIRTY_LOG_RING 192
#endif
#ifndef KVM_CAP_DIRTY_LOG_RING_ACQ_REL
#define KVM_CAP_DIRTY_LOG_RING_ACQ_REL 223
#endif
#ifndef KVM_CAP_XSAVE2
#define KVM_CAP_XSAVE2 208
#endif
#ifndef KVM_GET_XSAVE2
#define KVM_GET_XSAVE2 _IOR(KVMIO, 0xcf, struct kvm_xsave)
#endif
#ifndef KVM_EXIT_DIRTY_RING_FULL
#define KVM_EXIT_DIRTY_RING_FULL 31
#endif
#ifndef KVM_DIRTY_LOG_PAGE_OFFSET
#define KVM_DIRTY_LOG_PAGE_OFFSET 64
#endif

#endif
