/* SPDX-License-Identifier: MIT */
/*
 * Device DMA engines.
 *
 * A device issues an access at a bus address. What happens, in order:
 *
 *   bus ──► truncate to addr_bits ──► translate ──► RAM? ──► snoop or not
 *           (the engine drives only    (dma-ranges,   (else     (coherent:
 *            addr_bits lines; each     or an IOMMU    fault)     cache; else
 *            byte's address wraps      hook)                     RAM only)
 *            like its counter)
 *
 * Truncation is what a real engine does with an address it cannot drive:
 * the high bits are simply not on the bus, so a 32-bit device told to write
 * at 4 GiB + 4 KiB writes at 4 KiB. The model performs the truncated access
 * and records the event (original and truncated address) so tests and the
 * DMA debug layer can point at the driver that handed out such an address.
 *
 * Translation: with no dma-ranges the bus address is the physical address;
 * otherwise the range holding it maps it (cpu_start + bus - dma_start); a
 * translate hook (an IOMMU) replaces both. An access may span several
 * translations (an IOMMU maps page by page) and is cut into physically
 * contiguous pieces. If any piece has no translation or is not RAM, nothing
 * at all is accessed (the whole access is checked first) and a fault is
 * recorded, as a bus error would abort the transfer. The model's own IOMMU
 * (iommu.c) is called directly and told which pass asks (check, perform,
 * or a resolve), so that it counts one translation per piece.
 *
 * Coherence: a coherent device snoops: its reads take dirty lines from the
 * CPU cache, its writes go to RAM and update every cached copy. A
 * non-coherent device sees RAM only: it reads stale RAM under a dirty line,
 * and its writes leave cached copies stale for the CPU to read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dmamem/error.h>

#include "hw_internal.h"

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */

static int ranges_valid(const struct dmm_hw_dev_desc *d)
{
	if (d->nr_ranges > DMM_MAX_DMA_RANGES)
		return 0;
	for (unsigned i = 0; i < d->nr_ranges; i++) {
		const struct dmm_dma_range *r = &d->ranges[i];

		if (!r->size || r->cpu_start > UINT64_MAX - (r->size - 1) ||
		    r->dma_start > UINT64_MAX - (r->size - 1))
			return 0;
	}
	return 1;
}

/**
 * dmm_hw_dev_create() - register a DMA engine on @hw. See hw.h.
 * Context: process context.
 */
int dmm_hw_dev_create(struct dmm_hw *hw, const struct dmm_hw_dev_desc *d, struct dmm_hw_dev **out)
{
	struct dmm_hw_dev *dev;

	if (out)
		*out = NULL;
	if (!hw || !d || !out || d->addr_bits < 1 || d->addr_bits > 64 || !ranges_valid(d))
		return -DMM_EINVAL;
	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -DMM_ENOMEM;
	dev->hw = hw;
	snprintf(dev->name, sizeof(dev->name), "%s", d->name ? d->name : "dev");
	dev->addr_bits = d->addr_bits;
	dev->mask = DMM_DMA_BIT_MASK(d->addr_bits);
	dev->coherent = d->coherent != 0;
	dev->nr_ranges = d->nr_ranges;
	memcpy(dev->ranges, d->ranges, sizeof(dev->ranges[0]) * d->nr_ranges);

	hw_lock(hw);
	dev->next = hw->devs;
	if (hw->devs)
		hw->devs->prev = dev;
	hw->devs = dev;
	hw_unlock(hw);
	*out = dev;
	return 0;
}

/* Unregister and free @dev (NULL ignored). It must be idle. */
void dmm_hw_dev_destroy(struct dmm_hw_dev *dev)
{
	struct dmm_hw *hw;

	if (!dev)
		return;
	hw = dev->hw;
	hw_lock(hw);
	if (dev->prev)
		dev->prev->next = dev->next;
	else
		hw->devs = dev->next;
	if (dev->next)
		dev->next->prev = dev->prev;
	hw_unlock(hw);
	free(dev);
}

void hw_devs_destroy_all(struct dmm_hw *hw)
{
	while (hw->devs)
		dmm_hw_dev_destroy(hw->devs);
}

const char *dmm_hw_dev_name(const struct dmm_hw_dev *dev)
{
	return dev ? dev->name : "(null)";
}

void dmm_hw_dev_set_translate(struct dmm_hw_dev *dev, dmm_hw_translate_fn fn, void *ctx)
{
	if (!dev)
		return;
	hw_lock(dev->hw);
	dev->xlate = fn;
	dev->xlate_ctx = fn ? ctx : NULL;
	hw_unlock(dev->hw);
}

/* ------------------------------------------------------------------------ */
/* Translation                                                               */

/* Bus (already truncated) -> physical, with the contiguous run from there.
 * @pass tells the model's IOMMU which pass asks (what it may count). */
static int translate(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, int write,
		     enum hw_xlate_pass pass, dmm_phys_t *pa, uint64_t *run)
{
	if (dev->xlate) {
		int err = dev->xlate == hw_iommu_xlate
				  ? hw_iommu_translate(dev, bus, write, pass, pa, run)
				  : dev->xlate(dev->xlate_ctx, dev, bus, write, pa, run);

		if (err)
			return err < 0 ? err : -DMM_EFAULT;
		return *run ? 0 : -DMM_EFAULT;
	}
	if (!dev->nr_ranges) {
		/* to the end of the address space: 2^64 - bus bytes, which
		 * does not fit for bus 0 (then the largest value that does) */
		*pa = bus;
		*run = bus ? 0 - bus : UINT64_MAX;
		return 0;
	}
	for (unsigned i = 0; i < dev->nr_ranges; i++) {
		const struct dmm_dma_range *r = &dev->ranges[i];

		if (bus >= r->dma_start && bus - r->dma_start < r->size) {
			*pa = r->cpu_start + (bus - r->dma_start);
			*run = r->size - (bus - r->dma_start);
			return 0;
		}
	}
	return -DMM_EFAULT;
}

/* One piece of an access: bytes [off, off + *n) of an access of @len at
 * @bus go to physical *@pa; *@eff is the truncated bus address. */
static int piece(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, size_t off, size_t len, int write,
		 enum hw_xlate_pass pass, dmm_dma_addr_t *eff, dmm_phys_t *pa, size_t *n)
{
	dmm_dma_addr_t cur = bus + off;
	uint64_t run, ram, k = len - off;
	int err;

	*eff = cur & dev->mask;
	if (dev->mask != UINT64_MAX && k > dev->mask - *eff + 1)
		k = dev->mask - *eff + 1; /* the engine's address counter wraps here */
	err = translate(dev, *eff, write, pass, pa, &run);
	if (err)
		return err;
	ram = hw_ram_run(dev->hw, *pa);
	if (!ram)
		return -DMM_EFAULT;
	if (k > run)
		k = run;
	if (k > ram)
		k = ram;
	*n = (size_t)k;
	return 0;
}

int dmm_hw_dev_resolve(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, int write,
		       dmm_dma_addr_t *bus_eff, dmm_phys_t *pa, uint64_t *run)
{
	dmm_dma_addr_t e;
	dmm_phys_t p;
	uint64_t r, ram;
	int err;

	if (!dev || !bus_eff || !pa || !run)
		return -DMM_EINVAL;
	e = bus & dev->mask;
	err = translate(dev, e, write, HW_XLATE_PROBE, &p, &r);
	if (err)
		return err;
	ram = hw_ram_run(dev->hw, p);
	if (!ram)
		return -DMM_EFAULT;
	if (dev->mask != UINT64_MAX && r > dev->mask - e + 1)
		r = dev->mask - e + 1;
	*bus_eff = e;
	*pa = p;
	*run = r < ram ? r : ram;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Accesses                                                                  */

static void record_locked(struct dmm_hw_dev *dev, enum dmm_hw_event_kind kind, int write,
			  dmm_dma_addr_t bus, dmm_dma_addr_t eff, size_t len)
{
	struct dmm_hw_dev_event *e = &dev->ev[dev->ev_total % DMM_HW_DEV_EVENTS];

	e->kind = kind;
	e->write = write;
	e->bus = bus;
	e->bus_eff = eff;
	e->len = len;
	dev->ev_total++;
	if (kind == DMM_HW_EV_TRUNCATED)
		dev->st.truncations++;
	else
		dev->st.faults++;
}

static void notify_dev(struct dmm_hw_dev *dev, int write, dmm_dma_addr_t bus, dmm_dma_addr_t eff,
		       dmm_phys_t pa, size_t len, int fault)
{
	struct dmm_hw_access ac;

	if (!dev->hw->obs)
		return;
	memset(&ac, 0, sizeof(ac));
	ac.agent = DMM_HW_AGENT_DEV;
	ac.write = write;
	ac.dev = dev;
	ac.bus = bus;
	ac.bus_eff = eff;
	ac.truncated = bus != eff;
	ac.fault = fault;
	ac.pa = fault ? DMM_PHYS_MAX : pa;
	ac.len = len;
	hw_notify(dev->hw, &ac);
}

static int fault(struct dmm_hw_dev *dev, int write, dmm_dma_addr_t bus, dmm_dma_addr_t at,
		 dmm_dma_addr_t eff, size_t len, int err)
{
	struct dmm_hw *hw = dev->hw;

	hw_lock(hw);
	record_locked(dev, DMM_HW_EV_FAULT, write, bus, eff, len);
	hw_unlock(hw);
	hw_log(hw, DMM_LOG_DEBUG, "hw: %s: DMA %s fault at bus %#llx (effective %#llx): %s",
	       dev->name, write ? "write" : "read", (unsigned long long)at,
	       (unsigned long long)eff, dmm_errname(err));
	notify_dev(dev, write, at, eff, 0, len, 1);
	return -DMM_EFAULT;
}

static int dev_access(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, unsigned char *rbuf,
		      const unsigned char *wbuf, size_t len, int write)
{
	struct dmm_hw *hw;
	dmm_dma_addr_t eff, first_trunc = 0;
	dmm_phys_t pa;
	bool trunc = false;
	size_t off, n;
	int err;

	if (!dev || (!rbuf && !wbuf && len))
		return -DMM_EINVAL;
	if (!len)
		return 0;
	if ((dev->mask == UINT64_MAX && bus > UINT64_MAX - (len - 1)) ||
	    (dev->mask != UINT64_MAX && (uint64_t)len - 1 > dev->mask))
		return -DMM_EINVAL;
	hw = dev->hw;

	/* Pass 1: truncate and translate everything; touch nothing. */
	for (off = 0; off < len; off += n) {
		err = piece(dev, bus, off, len, write, HW_XLATE_CHECK, &eff, &pa, &n);
		if (eff != bus + off && !trunc) {
			trunc = true;
			first_trunc = eff;
		}
		if (err) {
			if (trunc) {
				hw_lock(hw);
				record_locked(dev, DMM_HW_EV_TRUNCATED, write, bus, first_trunc, len);
				hw_unlock(hw);
			}
			return fault(dev, write, bus, bus + off, eff, len, err);
		}
	}
	if (trunc) {
		hw_lock(hw);
		record_locked(dev, DMM_HW_EV_TRUNCATED, write, bus, first_trunc, len);
		hw_unlock(hw);
		hw_log(hw, DMM_LOG_DEBUG, "hw: %s: %u-bit DMA %s at %#llx truncated to %#llx",
		       dev->name, dev->addr_bits, write ? "write" : "read",
		       (unsigned long long)bus, (unsigned long long)first_trunc);
	}

	/* Pass 2: perform, piece by piece. A translation that vanished in
	 * between (an IOMMU unmapping concurrently) faults mid-transfer, as
	 * it would on real hardware. */
	for (off = 0; off < len; off += n) {
		uint64_t hits = 0;

		err = piece(dev, bus, off, len, write, HW_XLATE_PERFORM, &eff, &pa, &n);
		if (err)
			return fault(dev, write, bus, bus + off, eff, len, err);
		notify_dev(dev, write, bus + off, eff, pa, n, 0);
		hw_lock(hw);
		if (write) {
			if (dev->coherent)
				hw_snoop_write_locked(hw, pa, wbuf + off, n, &hits);
			else
				memmove(hw_ram_ptr(hw, pa), wbuf + off, n);
		} else {
			if (dev->coherent)
				hw_snoop_read_locked(hw, pa, rbuf + off, n, &hits);
			else
				memmove(rbuf + off, hw_ram_ptr(hw, pa), n);
		}
		dev->st.snoop_hits += hits;
		hw_unlock(hw);
	}

	hw_lock(hw);
	if (write) {
		dev->st.writes++;
		dev->st.bytes_written += len;
	} else {
		dev->st.reads++;
		dev->st.bytes_read += len;
	}
	hw_unlock(hw);
	return 0;
}

int dmm_hw_dev_read(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, void *buf, size_t len)
{
	if (!buf && len)
		return -DMM_EINVAL;
	return dev_access(dev, bus, buf, NULL, len, 0);
}

int dmm_hw_dev_write(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, const void *buf, size_t len)
{
	if (!buf && len)
		return -DMM_EINVAL;
	return dev_access(dev, bus, NULL, buf, len, 1);
}

void dmm_hw_dev_get_stats(struct dmm_hw_dev *dev, struct dmm_hw_dev_stats *st)
{
	if (!dev || !st)
		return;
	hw_lock(dev->hw);
	*st = dev->st;
	hw_unlock(dev->hw);
}

unsigned dmm_hw_dev_events(struct dmm_hw_dev *dev, struct dmm_hw_dev_event *ev, unsigned max,
			   uint64_t *total)
{
	uint64_t start, have;
	unsigned n;

	if (!dev)
		return 0;
	hw_lock(dev->hw);
	have = dev->ev_total < DMM_HW_DEV_EVENTS ? dev->ev_total : DMM_HW_DEV_EVENTS;
	n = ev ? (unsigned)(have < max ? have : max) : 0;
	start = dev->ev_total - n;
	for (unsigned i = 0; i < n; i++)
		ev[i] = dev->ev[(start + i) % DMM_HW_DEV_EVENTS];
	if (total)
		*total = dev->ev_total;
	hw_unlock(dev->hw);
	return n;
}
