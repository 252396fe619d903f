/* SPDX-License-Identifier: MIT */
/* dmamem: DMA-aware memory management. One include for every mechanism. */
#ifndef DMAMEM_H
#define DMAMEM_H

#include "error.h"
#include "constraint.h"
#include "platform.h"
#include "machine.h"
#include "mem.h"
#include "page_alloc.h"
#include "range.h"
#include "migrate.h"
#include "handles.h"
#include "cma.h"
#include "slab.h"
#include "dma.h"
#include "dma_debug.h"
#include "dma_pool_atomic.h"
#include "swiotlb.h"
#include "dmapool.h"

#endif
