//! `mmap`: validate a request, place it in the host virtual address space, and create its memory
//! object (anonymous region or fresh file) or device region.

use super::config::{HVA_LIMIT, PAGE, PA_LIMIT, SIZE_1G};
use super::error::HostOpError;
use super::hugetlb::hugetlb_order;
use super::object::MemObject;
use super::state::HostState;
use super::vma::{Backing, MmapRequest, Placement, Vma};

fn aligned(what: &'static str, value: u64, align: u64) -> Result<(), HostOpError> {
    if value % align == 0 {
        Ok(())
    } else {
        Err(HostOpError::Misaligned { what, value, align })
    }
}

impl HostState {
    /// Map `req` and return its start address. Nothing changes on error.
    pub fn mmap(&mut self, req: &MmapRequest) -> Result<u64, HostOpError> {
        let kind = req.backing.kind();
        let align = match req.backing {
            Backing::Hugetlbfs { page_size, .. } => {
                hugetlb_order(page_size).ok_or(HostOpError::PageSize { size: page_size, kind })?;
                page_size.bytes()
            }
            _ => PAGE,
        };
        aligned("len", req.len, align)?;
        aligned("file offset", req.backing.file_offset(), align)?;
        let hint = match req.placement {
            Placement::Aligned { offset } => offset,
            Placement::Fixed { hva } => hva,
        };
        if req.len == 0 {
            return Err(HostOpError::EmptyRange { hva: hint });
        }
        if let Backing::PfnMap { pa, .. } = req.backing {
            if pa.checked_add(req.len).is_none_or(|e| e > PA_LIMIT) {
                return Err(HostOpError::NoSpace { start: pa, end: pa.saturating_add(req.len), space: "physical" });
            }
        }
        let hva = match req.placement {
            Placement::Aligned { offset } => {
                aligned("offset", offset, align)?;
                if offset >= SIZE_1G {
                    return Err(HostOpError::Misaligned { what: "offset", value: offset, align: SIZE_1G });
                }
                let mut base = self.next_hva;
                while self.vmas.overlaps(base + offset, (base + offset).saturating_add(req.len)) {
                    base += SIZE_1G;
                }
                base + offset
            }
            Placement::Fixed { hva } => {
                aligned("hva", hva, align)?;
                hva
            }
        };
        let end = hva.checked_add(req.len).filter(|&e| e <= HVA_LIMIT).ok_or(HostOpError::NoSpace {
            start: hva,
            end: hva.saturating_add(req.len),
            space: "host virtual",
        })?;
        if self.vmas.overlaps(hva, end) {
            return Err(HostOpError::Overlap { hva });
        }
        let file_offset = req.backing.file_offset();
        let (object, pgoff, device_pfn) = match req.backing {
            Backing::Anonymous { .. } => (Some(self.new_object(u64::MAX)), hva / PAGE, 0),
            Backing::Shmem { file_size, .. } | Backing::PageCache { file_size, .. } => {
                let size = file_size.unwrap_or(file_offset.saturating_add(req.len));
                (Some(self.new_object(size.div_ceil(PAGE))), file_offset / PAGE, 0)
            }
            Backing::Hugetlbfs { .. } => {
                (Some(self.new_object(file_offset.saturating_add(req.len) / PAGE)), file_offset / PAGE, 0)
            }
            Backing::Dax { .. } => {
                let dax_end = file_offset.saturating_add(req.len);
                if dax_end > self.config.dax_size {
                    return Err(HostOpError::NoSpace { start: file_offset, end: dax_end, space: "DAX device" });
                }
                (None, file_offset / PAGE, self.config.device_base / PAGE)
            }
            Backing::PfnMap { pa, .. } => {
                aligned("pa", pa, PAGE)?;
                (None, pa / PAGE, 0)
            }
        };
        self.vmas.insert(Vma {
            start: hva,
            end,
            pgoff,
            object,
            device_pfn,
            backing: req.backing,
            prot: req.prot,
            advice: req.advice,
        });
        if let Some(next) = Self::round_up_1g(end).and_then(|e| e.checked_add(SIZE_1G)) {
            self.next_hva = self.next_hva.max(next);
        }
        Ok(hva)
    }

    fn new_object(&mut self, file_pages: u64) -> super::object::ObjectId {
        let id = self.next_object;
        // 2^32 mmaps cannot happen within a run's event limit.
        self.next_object = self.next_object.saturating_add(1);
        self.objects.insert(id, MemObject::new(file_pages));
        id
    }
}
