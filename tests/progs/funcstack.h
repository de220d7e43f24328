/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __FUNCSTACK_H
#define __FUNCSTACK_H

#define FUNC_MAX_STACK_DEPTH	16
/* used to convince the verifier we do not stray outside of the array */
#define FUNC_STACK_DEPTH_MASK	(FUNC_MAX_STACK_DEPTH - 1)

/* ksnoop's per-task call stack: what was entered, popped on return */
struct func_stack {
	__u64 task;
	__u64 ips[FUNC_MAX_STACK_DEPTH];
	__u8 stack_depth;
};

#endif /* __FUNCSTACK_H */
