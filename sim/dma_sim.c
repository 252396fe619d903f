/* SPDX-License-Identifier: MIT */
#include <stdint.h>
#include <string.h>

#include <dmamem/error.h>

#include "dma_sim.h"

#include <dmamem/iommu.h>

static struct {
	struct dmm_mem *mem;
	struct dmm_hw_dev *hw[DMM_SIM_MAX_DEVICES];
	struct dmm_device *dev[DMM_SIM_MAX_DEVICES];
} registry;

unsigned dmm_sim_mask_bits(uint64_t mask)
{
	return mask ? 64u - (unsigned)__builtin_clzll(mask) : 0;
}

static void reg_add(struct dmm_hw_dev *hw, struct dmm_device *dev)
{
	for (unsigned i = 0; i < DMM_SIM_MAX_DEVICES; i++)
		if (!__atomic_load_n(&registry.hw[i], __ATOMIC_ACQUIRE)) {
			registry.dev[i] = dev;
			__atomic_store_n(&registry.hw[i], hw, __ATOMIC_RELEASE);
			return;
		}
}

static void reg_del(struct dmm_hw_dev *hw)
{
	for (unsigned i = 0; i < DMM_SIM_MAX_DEVICES; i++)
		if (__atomic_load_n(&registry.hw[i], __ATOMIC_ACQUIRE) == hw)
			__atomic_store_n(&registry.hw[i], (struct dmm_hw_dev *)0, __ATOMIC_RELEASE);
}

static struct dmm_device *reg_find(const struct dmm_hw_dev *hw)
{
	for (unsigned i = 0; i < DMM_SIM_MAX_DEVICES; i++)
		if (__atomic_load_n(&registry.hw[i], __ATOMIC_ACQUIRE) == hw)
			return registry.dev[i];
	return (struct dmm_device *)0;
}

int dmm_sim_device_create(struct dmm_mem *mem, struct dmm_hw *hw, const struct dmm_device_desc *desc,
			  struct dmm_device *parent, struct dmm_sim_dev *out)
{
	struct dmm_hw_dev_desc hd;
	const struct dmm_machine *m;
	int err;

	if (!mem || !hw || !desc || !out)
		return -DMM_EINVAL;
	err = dmm_device_create(mem, desc, parent, &out->dev);
	if (err)
		return err;
	memset(&hd, 0, sizeof(hd));
	hd.name = desc->name;
	hd.addr_bits = dmm_sim_mask_bits(desc->dma_mask);
	hd.coherent = desc->coherent;
	hd.nr_ranges = desc->nr_ranges;
	memcpy(hd.ranges, desc->ranges, sizeof(hd.ranges));
	m = dmm_mem_machine(mem);
	if (!desc->nr_ranges && desc->bus_offset) {
		dmm_phys_t lo = DMM_PHYS_MAX, hi = 0;
		for (unsigned i = 0; i < m->nr_ram; i++) {
			lo = m->ram[i].base < lo ? m->ram[i].base : lo;
			hi = m->ram[i].base + m->ram[i].size > hi ? m->ram[i].base + m->ram[i].size : hi;
		}
		lo &= ~(DMM_PAGE_SIZE - 1);
		hd.nr_ranges = 1;
		hd.ranges[0].cpu_start = lo;
		hd.ranges[0].dma_start = lo + (uint64_t)desc->bus_offset;
		hd.ranges[0].size = hi - lo;
	}
	err = dmm_hw_dev_create(hw, &hd, &out->hw);
	if (err) {
		dmm_device_destroy(out->dev);
		return err;
	}
	if (desc->iommu) {
		/* behind the machine's IOMMU (created with defaults on first use):
		 * the engine's addresses are translated by the domain's tables */
		struct dmm_iommu_info info;
		err = dmm_device_iommu_info(out->dev, &info);
		if (!err && !dmm_hw_iommu_present(hw)) {
			err = dmm_hw_iommu_enable(hw, (const struct dmm_hw_iommu_opts *)0);
			if (err == -DMM_EEXIST)
				err = 0;
		}
		if (!err)
			err = dmm_hw_iommu_attach(out->hw, info.domain_id, info.root,
						  info.mode == DMM_IOMMU_IDENTITY);
		if (err) {
			dmm_hw_dev_destroy(out->hw);
			dmm_device_destroy(out->dev);
			return err;
		}
	}
	reg_add(out->hw, out->dev);
	return 0;
}

int dmm_sim_device_destroy(struct dmm_sim_dev *sd)
{
	int err;

	if (!sd || !sd->dev)
		return -DMM_EINVAL;
	/* The library device first: a bus with devices on it refuses
	 * (-DMM_EBUSY) and then both halves must stay as they were. */
	err = dmm_device_destroy(sd->dev);
	if (err == -DMM_EBUSY)
		return err;
	reg_del(sd->hw);
	dmm_hw_dev_destroy(sd->hw);
	sd->dev = NULL;
	sd->hw = NULL;
	return err;
}

static void observe(void *ctx, const struct dmm_hw_access *a)
{
	struct dmm_mem *mem = ctx;
	struct dmm_device *dev;

	switch (a->agent) {
	case DMM_HW_AGENT_CPU:
		dmm_dma_debug_cpu_access(mem, a->pa, a->len, a->write, __builtin_return_address(0));
		break;
	case DMM_HW_AGENT_DEV:
		dev = reg_find(a->dev);
		if (dev)
			dmm_dma_debug_device_access(dev, a->bus_eff, a->fault ? DMM_PHYS_MAX : a->pa, a->len,
						    a->write, a->truncated, a->bus);
		break;
	default: /* the library's own copies: never a misuse */
		break;
	}
}

void dmm_sim_attach_debug(struct dmm_hw *hw, struct dmm_mem *mem)
{
	registry.mem = mem;
	dmm_hw_set_observer(hw, mem ? observe : (dmm_hw_observer_fn)0, mem);
}
