/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __STAMPS_H
#define __STAMPS_H

#define MAX_SLOTS 64

#endif /* __STAMPS_H */
