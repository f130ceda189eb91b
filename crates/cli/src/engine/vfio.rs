//! VFIO steps: user memory, container and group descriptors, and the SPAPR TCE ioctls.

use super::*;

impl Engine {
    pub(super) fn vfio(&mut self, step: &Step, iter: u64) -> Result<Outcome, String> {
        let World::PowerNv { m, vfio, .. } = &self.world else {
            return Err("needs a powernv machine".into());
        };
        let (m, vfio) = (m.clone(), vfio.clone());
        let mm = Mm(self.opt_num(step, "process", iter, DEFAULT_PROCESS)? as u32);
        let cfd = |e: &Engine| -> Result<ContainerFd, String> {
            Ok(ContainerFd(e.num(step, "container", iter)? as u32))
        };
        let gfd = |e: &Engine| -> Result<GroupFd, String> {
            Ok(GroupFd(e.num(step, "group", iter)? as u32))
        };
        let out = match step.op.name {
            "mmap" => {
                let ps = self.opt_num(step, "page_size", iter, 1 << 16)?;
                if !ps.is_power_of_two() {
                    return Err("page_size must be a power of two".into());
                }
                match vfio.mmap(mm, self.num(step, "size", iter)?, ps.trailing_zeros()) {
                    Ok(ua) => {
                        self.name_value(step, ua);
                        Outcome::Ok(format!("ua {ua:#x}"))
                    }
                    Err(e) => Outcome::Status(e.to_string(), String::new()),
                }
            }
            "vfio_register_device" => errno(vfio.register_device(Self::device(&m, step)?)),
            "vfio_open_container" => {
                let c = vfio.open_container();
                if let World::PowerNv { containers, .. } = &mut self.world {
                    containers.push(c);
                }
                self.name_value(step, u64::from(c.0));
                Outcome::Ok(format!("fd {}", c.0))
            }
            "vfio_open_group" => match vfio.open_group(Self::device(&m, step)?) {
                Ok(g) => {
                    self.name_value(step, u64::from(g.0));
                    Outcome::Ok(format!("fd {}", g.0))
                }
                Err(e) => Outcome::Status(e.to_string(), String::new()),
            },
            "vfio_open_emulated_group" => {
                let g = vfio.open_emulated_group();
                self.name_value(step, u64::from(g.0));
                Outcome::Ok(format!("fd {}", g.0))
            }
            "vfio_set_container" => {
                let (g, c) = (gfd(self)?, cfd(self)?);
                errno(vfio.set_container(g, c))
            }
            "vfio_unset_container" => errno(vfio.unset_container(gfd(self)?)),
            "vfio_open_device" => errno(vfio.open_device(gfd(self)?, Self::device(&m, step)?)),
            "vfio_close_device" => errno(vfio.close_device(gfd(self)?)),
            "vfio_close_group" => errno(vfio.close_group(gfd(self)?)),
            "vfio_close_container" => errno(vfio.close_container(cfd(self)?)),
            "vfio_check_extension" => ioctl_outcome(vfio.ioctl_int(
                mm,
                cfd(self)?,
                ioctl::CHECK_EXTENSION,
                self.num(step, "arg", iter)?,
            )),
            "vfio_set_iommu" => ioctl_outcome(vfio.ioctl_int(
                mm,
                cfd(self)?,
                ioctl::SET_IOMMU,
                self.num(step, "type", iter)?,
            )),
            "vfio_enable" => ioctl_outcome(vfio.ioctl_int(mm, cfd(self)?, ioctl::ENABLE, 0)),
            "vfio_disable" => ioctl_outcome(vfio.ioctl_int(mm, cfd(self)?, ioctl::DISABLE, 0)),
            "vfio_get_info" => {
                let mut arg = encode::info(self.opt_num(step, "argsz", iter, 32)? as u32);
                let r = vfio.ioctl(mm, cfd(self)?, ioctl::SPAPR_TCE_GET_INFO, &mut arg);
                if r.is_ok() {
                    let mut named = Named::default();
                    named
                        .fields
                        .insert("flags", u64::from(encode::get32(&arg, 4)));
                    named
                        .fields
                        .insert("start", u64::from(encode::get32(&arg, 8)));
                    named
                        .fields
                        .insert("size", u64::from(encode::get32(&arg, 12)));
                    if arg.len() >= 32 {
                        named.fields.insert("pgsizes", encode::get64(&arg, 16));
                        named
                            .fields
                            .insert("max_windows", u64::from(encode::get32(&arg, 24)));
                        named
                            .fields
                            .insert("levels", u64::from(encode::get32(&arg, 28)));
                    }
                    named.primary = named.fields["size"];
                    let detail = format!(
                        "window 0 {:#x}+{:#x}, flags {:#x}",
                        named.fields["start"], named.fields["size"], named.fields["flags"]
                    );
                    self.name_result(step, named);
                    Outcome::Ok(detail)
                } else {
                    ioctl_outcome(r)
                }
            }
            "vfio_register_memory" | "vfio_unregister_memory" => {
                let mut arg = encode::register(
                    self.opt_num(step, "flags", iter, 0)? as u32,
                    self.num(step, "vaddr", iter)?,
                    self.num(step, "size", iter)?,
                );
                let nr = if step.op.name == "vfio_register_memory" {
                    ioctl::REGISTER_MEMORY
                } else {
                    ioctl::UNREGISTER_MEMORY
                };
                ioctl_outcome(vfio.ioctl(mm, cfd(self)?, nr, &mut arg))
            }
            "vfio_create_window" => {
                let ps = self.num(step, "page_size", iter)?;
                if !ps.is_power_of_two() {
                    return Err("page_size must be a power of two".into());
                }
                let mut arg = encode::create(
                    ps.trailing_zeros(),
                    self.num(step, "window_size", iter)?,
                    self.opt_num(step, "levels", iter, 1)? as u32,
                );
                encode::set_flags(&mut arg, self.opt_num(step, "flags", iter, 0)? as u32);
                let r = vfio.ioctl(mm, cfd(self)?, ioctl::TCE_CREATE, &mut arg);
                if r == Ok(0) {
                    let start = encode::get64(&arg, 32);
                    let mut named = Named {
                        primary: start,
                        ..Named::default()
                    };
                    named.fields.insert("start", start);
                    self.name_result(step, named);
                    Outcome::Ok(format!("start {start:#x}"))
                } else {
                    ioctl_outcome(r)
                }
            }
            "vfio_remove_window" => {
                let mut arg = encode::remove(self.num(step, "start", iter)?);
                encode::set_flags(&mut arg, self.opt_num(step, "flags", iter, 0)? as u32);
                ioctl_outcome(vfio.ioctl(mm, cfd(self)?, ioctl::TCE_REMOVE, &mut arg))
            }
            "vfio_map_dma" => {
                let flags = match Self::node(step, "flags").map(|n| &n.val) {
                    Some(Val::Str(s)) if s == "rw" => 3,
                    Some(Val::Str(s)) if s == "r" => 1,
                    Some(Val::Str(s)) if s == "w" => 2,
                    Some(_) => self.num(step, "flags", iter)?,
                    None => 3,
                };
                let mut arg = encode::map(
                    flags as u32,
                    self.num(step, "vaddr", iter)?,
                    self.num(step, "iova", iter)?,
                    self.num(step, "size", iter)?,
                );
                if Self::node(step, "argsz").is_some() {
                    encode::set_argsz(&mut arg, self.num(step, "argsz", iter)? as u32);
                }
                ioctl_outcome(vfio.ioctl(mm, cfd(self)?, ioctl::MAP_DMA, &mut arg))
            }
            "vfio_ioctl" => self.raw_ioctl(step, iter, &vfio, mm, cfd(self)?)?,
            "vfio_eeh_pe_op" => {
                let o = match Self::node(step, "eeh_op").map(|n| &n.val) {
                    Some(Val::Str(s)) if crate::scenario::eeh_op_number(s).is_some() => {
                        crate::scenario::eeh_op_number(s).unwrap_or_default()
                    }
                    _ => u32::try_from(self.num(step, "eeh_op", iter)?)
                        .map_err(|_| "eeh_op fits in 32 bits".to_string())?,
                };
                let mut arg = spapr_vfio::encode_eeh_pe_op(
                    o,
                    self.opt_num(step, "type", iter, 0)? as u32,
                    self.opt_num(step, "func", iter, 0)? as u32,
                );
                if Self::node(step, "argsz").is_some() {
                    let a = self.num(step, "argsz", iter)? as u32;
                    arg[0..4].copy_from_slice(&a.to_ne_bytes());
                }
                let flags = self.opt_num(step, "flags", iter, 0)? as u32;
                arg[4..8].copy_from_slice(&flags.to_ne_bytes());
                ioctl_outcome(vfio.ioctl(mm, cfd(self)?, ioctl::EEH_PE_OP, &mut arg))
            }
            "vfio_unmap_dma" => {
                let mut arg = encode::unmap(
                    self.opt_num(step, "flags", iter, 0)? as u32,
                    self.num(step, "iova", iter)?,
                    self.num(step, "size", iter)?,
                );
                if Self::node(step, "argsz").is_some() {
                    encode::set_argsz(&mut arg, self.num(step, "argsz", iter)? as u32);
                }
                ioctl_outcome(vfio.ioctl(mm, cfd(self)?, ioctl::UNMAP_DMA, &mut arg))
            }
            other => return Err(format!("{other} is not a VFIO operation")),
        };
        Ok(out)
    }
}

impl Engine {
    /// `vfio_ioctl`: the ioctl by name or number on a container fd, with an integer or the
    /// buffer the file spells out; the result named with the buffer's words after it.
    fn raw_ioctl(
        &mut self,
        step: &Step,
        iter: u64,
        vfio: &Vfio,
        mm: Mm,
        fd: ContainerFd,
    ) -> Result<Outcome, String> {
        let named = match Self::node(step, "nr").map(|n| &n.val) {
            Some(Val::Str(s)) => crate::scenario::container_ioctl(s),
            _ => None,
        };
        let nr = match named {
            Some(nr) => nr,
            None => u32::try_from(self.num(step, "nr", iter)?)
                .map_err(|_| "nr fits in 32 bits".to_string())?,
        };
        let mut buf: Option<Vec<u8>> = None;
        for (k, width) in [("bytes", 1usize), ("u32", 4), ("u64", 8)] {
            if Self::node(step, k).is_some() {
                let words = self.nums(step, k)?;
                let mut b = Vec::with_capacity(words.len() * width);
                for w in words {
                    b.extend_from_slice(&w.to_le_bytes()[..width]);
                }
                buf = Some(b);
            }
        }
        let r = match &mut buf {
            Some(b) => vfio.ioctl(mm, fd, nr, b),
            None => vfio.ioctl_int(mm, fd, nr, self.opt_num(step, "arg", iter, 0)?),
        };
        let mut named = Named {
            primary: match r {
                Ok(v) => v as u64,
                Err(e) => e.code() as u64,
            },
            ..Named::default()
        };
        let words: Vec<u64> = buf
            .as_deref()
            .unwrap_or_default()
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        for (k, w) in crate::engine::WORD_NAMES.iter().zip(&words) {
            named.fields.insert(k, *w);
        }
        self.name_result(step, named);
        let shown: Vec<String> = words.iter().take(8).map(|w| format!("{w:#x}")).collect();
        let after = if shown.is_empty() {
            String::new()
        } else {
            format!(
                "buffer after: [{}{}]",
                shown.join(", "),
                if words.len() > 8 { ", ..." } else { "" }
            )
        };
        Ok(match r {
            Ok(0) => Outcome::Ok(after),
            Ok(n) => Outcome::Status(n.to_string(), after),
            Err(e) => Outcome::Status(e.to_string(), after),
        })
    }
}
