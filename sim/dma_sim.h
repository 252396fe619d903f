/* SPDX-License-Identifier: MIT */
/*
 * Glue between the DMA API and the hardware model: a simulated device is a
 * library device (struct dmm_device: what the driver's DMA API sees) plus a
 * DMA engine in the model (struct dmm_hw_dev: what the hardware does),
 * built from one description. An observer feeds every CPU and device access
 * of the model to DMA debug. Hosted code.
 */
#ifndef DMM_SIM_DMA_SIM_H
#define DMM_SIM_DMA_SIM_H

#include <dmamem/dma.h>
#include <dmamem/dma_debug.h>

#include "hw/hw.h"

#define DMM_SIM_MAX_DEVICES 64

struct dmm_sim_dev {
	struct dmm_device *dev;
	struct dmm_hw_dev *hw;
};

/* Address bits of a mask: the engine drives as many lines as the mask has. */
unsigned dmm_sim_mask_bits(uint64_t mask);

/*
 * Create both halves of a device from @desc (and @parent, a library bus).
 * The engine gets the mask's address bits, the description's coherence and
 * its dma-ranges (a plain bus offset becomes one range over all RAM). A
 * device behind an IOMMU (desc->iommu) has its engine attached to the
 * model's IOMMU (enabled with defaults if the machine has none yet) in the
 * device's domain: translated through its page table, or identity.
 */
int dmm_sim_device_create(struct dmm_mem *mem, struct dmm_hw *hw, const struct dmm_device_desc *desc,
			  struct dmm_device *parent, struct dmm_sim_dev *out);
/* Destroy both halves; returns dmm_device_destroy()'s result. A bus with
 * devices on it is refused (-DMM_EBUSY) and left whole; after a destroy
 * @sd is cleared, so destroying it again fails with -DMM_EINVAL. */
int dmm_sim_device_destroy(struct dmm_sim_dev *sd);

/* Install (or with @mem NULL remove) the observer that feeds DMA debug. */
void dmm_sim_attach_debug(struct dmm_hw *hw, struct dmm_mem *mem);

#endif
