//! PowerNV steps: drivers, claims, hot-plug, the kernel DMA API, device DMA, RAM and
//! OPAL error injection.

use super::*;

impl Engine {
    pub(super) fn device(m: &PowerNv, step: &Step) -> Result<iommu_core::DeviceId, String> {
        let name = Self::text(step, "device")?;
        m.device(name)
            .ok_or_else(|| format!("no device named {name:?}"))
    }

    pub(super) fn powernv(&mut self, step: &Step, iter: u64) -> Result<Outcome, String> {
        let World::PowerNv { m, vfio, .. } = &self.world else {
            return Err("needs a powernv machine".into());
        };
        let (m, vfio) = (m.clone(), vfio.clone());
        Ok(match step.op.name {
            "bind" => errno(m.bind_driver(Self::device(&m, step)?, Self::text(step, "driver")?)),
            "unbind" => {
                let dev = Self::device(&m, step)?;
                let r = m.unbind_driver(dev);
                if r == Err(Errno::Enodev) {
                    // sysfs unbind_store on a device without a driver.
                    m.core().record(
                        EventKind::DriverUnbind,
                        Some(Self::text(step, "device")?.to_string()),
                        None,
                        "unbind without a bound driver: -ENODEV, nothing changes".into(),
                    );
                }
                errno(r)
            }
            "claim" => {
                let dev = Self::device(&m, step)?;
                let owner = self.opt_num(step, "owner", iter, 0x5e5)?;
                match m.claim_group(dev, OwnerCookie(owner)) {
                    Ok(c) => {
                        if let World::PowerNv { claims, .. } = &mut self.world {
                            claims.insert(Self::text(step, "device")?.to_string(), c);
                        }
                        Outcome::Ok(String::new())
                    }
                    Err(e) => Outcome::Status(e.to_string(), String::new()),
                }
            }
            "release" => {
                let name = Self::text(step, "device")?;
                let dev = Self::device(&m, step)?;
                // iommu_group_release_dma_owner acts on the group: the claim taken
                // through this device, or through another device of its group.
                let claim = match &mut self.world {
                    World::PowerNv { claims, .. } => {
                        let key =
                            claims
                                .contains_key(name)
                                .then(|| name.to_string())
                                .or_else(|| {
                                    claims
                                        .iter()
                                        .find(|(_, c)| c.group().contains(dev))
                                        .map(|(k, _)| k.clone())
                                });
                        key.and_then(|k| claims.remove(&k))
                    }
                    World::PSeries { .. } => None,
                };
                match claim {
                    Some(c) => errno(m.release(c)),
                    None => {
                        unbalanced(&m, dev, "iommu_group_release_dma_owner");
                        Outcome::Ok("WARN: nothing to release".into())
                    }
                }
            }
            "claim_device" => {
                let owner = self.opt_num(step, "owner", iter, 0x5e5)?;
                match m.claim_device(Self::device(&m, step)?, OwnerCookie(owner)) {
                    Ok(c) => {
                        if let World::PowerNv { device_claims, .. } = &mut self.world {
                            device_claims
                                .entry(Self::text(step, "device")?.to_string())
                                .or_default()
                                .push(c);
                        }
                        Outcome::Ok(String::new())
                    }
                    Err(e) => Outcome::Status(e.to_string(), String::new()),
                }
            }
            "release_device" => {
                let name = Self::text(step, "device")?;
                let dev = Self::device(&m, step)?;
                let claim = match &mut self.world {
                    World::PowerNv { device_claims, .. } => {
                        device_claims.get_mut(name).and_then(Vec::pop)
                    }
                    World::PSeries { .. } => None,
                };
                match claim {
                    Some(c) => errno(m.release(c)),
                    None => {
                        unbalanced(&m, dev, "iommu_device_release_dma_owner");
                        Outcome::Ok("WARN: nothing to release".into())
                    }
                }
            }
            "hot_add" => {
                // Widths checked by `num` (phb 32 bits, bus and devfn 8); the mask is a
                // width in bits.
                let mask = self.opt_num(step, "dma_mask", iter, 64)?;
                if !(1..=64).contains(&mask) {
                    return Err(format!("dma_mask is a width in bits, 1..=64; found {mask}"));
                }
                let d = spapr_platform::DeviceConfig::new(
                    Self::text(step, "device")?,
                    self.num(step, "phb", iter)? as u32,
                    self.num(step, "bus", iter)? as u8,
                    self.opt_num(step, "devfn", iter, 0)? as u8,
                    mask as u32,
                );
                let before = m.device(&d.name);
                match m.add_device(&d) {
                    Ok(_) => Outcome::Ok(String::new()),
                    // The device exists, in no PE's range: it has no group.
                    Err(e) if before.is_none() && m.device(&d.name).is_some() => {
                        Outcome::Ok(format!("added without a group: {e}"))
                    }
                    // Nothing was added.
                    Err(e) => Outcome::Status(e.errno().to_string(), e.to_string()),
                }
            }
            // Through VFIO: a device user space holds is not removed behind it.
            "hot_remove" => errno(vfio.remove_device(Self::device(&m, step)?)),
            "dma_alloc" => {
                let dev = Self::device(&m, step)?;
                match m.driver_dma_alloc(dev, self.num(step, "size", iter)?, Self::dir(step)?) {
                    Ok(b) => {
                        let mut named = Named {
                            primary: b.dma,
                            ..Named::default()
                        };
                        named.fields.insert("dma", b.dma);
                        named.fields.insert("phys", b.phys);
                        named.fields.insert("len", b.len);
                        self.name_result(step, named);
                        Outcome::Ok(format!("dma {:#x} -> phys {:#x}", b.dma, b.phys))
                    }
                    Err(e) => Outcome::Status(e.to_string(), String::new()),
                }
            }
            "dma_free" => {
                errno(m.driver_dma_free(Self::device(&m, step)?, self.num(step, "dma", iter)?))
            }
            "dma_map" => {
                let dev = Self::device(&m, step)?;
                let cpu = self.opt_num(step, "cpu", iter, 0)? as u32;
                let (phys, len) = (self.num(step, "phys", iter)?, self.num(step, "size", iter)?);
                match m.dma_map(dev, phys, len, Self::dir(step)?, cpu) {
                    Ok(a) => {
                        self.name_value(step, a);
                        Outcome::Ok(format!("dma {a:#x}"))
                    }
                    Err(e) => Outcome::Status(e.errno().to_string(), e.to_string()),
                }
            }
            "dma_unmap" => {
                let dev = Self::device(&m, step)?;
                match m.dma_unmap(
                    dev,
                    self.num(step, "dma", iter)?,
                    self.num(step, "size", iter)?,
                ) {
                    Ok(()) => Outcome::Ok(String::new()),
                    Err(e) => Outcome::Status(e.errno().to_string(), e.to_string()),
                }
            }
            "device_read" => {
                let dev = Self::device(&m, step)?;
                let want = Self::node(step, "data")
                    .map(|_| Self::data(step, "data"))
                    .transpose()?;
                let len = match &want {
                    Some(d) => d.len() as u64,
                    None => self.opt_num(step, "len", iter, 8)?,
                };
                match m.device_read(dev, self.num(step, "addr", iter)?, len) {
                    Ok(got) => compare(&got, want.as_deref()),
                    Err(f) => Outcome::Status("fault".into(), f.to_string()),
                }
            }
            "device_write" => {
                let dev = Self::device(&m, step)?;
                match m.device_write(
                    dev,
                    self.num(step, "addr", iter)?,
                    &Self::data(step, "data")?,
                ) {
                    Ok(()) => Outcome::Ok(String::new()),
                    Err(f) => Outcome::Status("fault".into(), f.to_string()),
                }
            }
            "ram_write" => {
                let d = Self::data(step, "data")?;
                match m.ram().write(self.num(step, "addr", iter)?, &d) {
                    Ok(()) => Outcome::Ok(String::new()),
                    Err(e) => Outcome::Error(e.to_string()),
                }
            }
            "ram_read" => {
                let d = Self::data(step, "data")?;
                let mut got = vec![0u8; d.len()];
                match m.ram().read(self.num(step, "addr", iter)?, &mut got) {
                    Ok(()) => compare(&got, Some(&d)),
                    Err(e) => Outcome::Error(e.to_string()),
                }
            }
            "fail" => {
                let call = Self::text(step, "call")?;
                let point = spapr_platform::FaultPoint::from_name(call)
                    .ok_or_else(|| format!("fail: unknown call {call:?}"))?;
                let pe = match Self::node(step, "device") {
                    Some(_) => {
                        let d = Self::device(&m, step)?;
                        Some(m.pe_of(d).ok_or("the device is in no PE")?.id())
                    }
                    None => None,
                };
                let nth = self.opt_num(step, "nth", iter, 1)?;
                let skip = u32::try_from(nth.saturating_sub(1))
                    .map_err(|_| format!("nth {nth} does not fit the call counter"))?;
                if nth == 0 {
                    return Err("nth counts calls from 1".into());
                }
                let opal = match Self::node(step, "opal") {
                    None => OpalError::Hardware,
                    Some(_) => opal(step)?,
                };
                m.env().inject(point, pe, skip, opal);
                Outcome::Ok(String::new())
            }
            "stray_tce" => {
                let window = self.num(step, "window", iter)?;
                if window > 1 {
                    return Err(format!("window {window}: a PE has windows 0 and 1"));
                }
                let r = m.inject_stray_tce(
                    Self::device(&m, step)?,
                    window as usize,
                    self.num(step, "entry", iter)?,
                    self.num(step, "tce", iter)?,
                    Self::flag(step, "kill")?,
                );
                match r {
                    Ok(old) => Outcome::Ok(format!("was {old:#x}")),
                    Err(e) => Outcome::Status(e.to_string(), String::new()),
                }
            }
            "config_read" => {
                let v = m
                    .device_config_read(Self::device(&m, step)?, 0)
                    .map_err(|e| e.to_string())?;
                self.name_value(step, u64::from(v));
                match Self::node(step, "value") {
                    Some(_) if self.num(step, "value", iter)? != u64::from(v) => {
                        Outcome::Mismatch(format!(
                            "read {v:#x}, the file expects {:#x}",
                            self.num(step, "value", iter)?
                        ))
                    }
                    _ => Outcome::Ok(format!("read {v:#x}")),
                }
            }
            "mmio_read" => {
                let v = m
                    .device_mmio_read(Self::device(&m, step)?, 0)
                    .map_err(|e| e.to_string())?;
                self.name_value(step, v);
                match Self::node(step, "value") {
                    Some(_) if self.num(step, "value", iter)? != v => Outcome::Mismatch(format!(
                        "read {v:#x}, the file expects {:#x}",
                        self.num(step, "value", iter)?
                    )),
                    _ => Outcome::Ok(format!("read {v:#x}")),
                }
            }
            "eeh_recover" => {
                let results: Vec<spapr_platform::DriverResult> = match Self::node(step, "results") {
                    Some(DocNode {
                        val: Val::Arr(a), ..
                    }) => a
                        .iter()
                        .map(|n| match &n.val {
                            Val::Str(s) => spapr_platform::DriverResult::from_name(s)
                                .ok_or_else(|| format!("unknown driver answer {s:?}")),
                            _ => Err("results holds driver answers".to_string()),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => Vec::new(),
                };
                let r = m.eeh_recover(Self::device(&m, step)?, &results);
                recovery(r, "recovered", "permanently disabled, devices removed")
            }
            "phb_fence" | "phb_kill" | "phb_recover" => {
                let i = self.num(step, "phb", iter)?;
                let phb = usize::try_from(i)
                    .ok()
                    .and_then(|i| m.phbs().get(i))
                    .ok_or_else(|| format!("the machine has no PHB {i}"))?
                    .clone();
                if step.op.name == "phb_fence" {
                    phb.eeh_fence();
                    m.flush();
                    Outcome::Ok(String::new())
                } else if step.op.name == "phb_kill" {
                    phb.eeh_kill();
                    m.flush();
                    Outcome::Ok(String::new())
                } else {
                    let r = phb.eeh_recover();
                    m.flush();
                    recovery(r, "PHB reset", "PHB permanently failed")
                }
            }
            "clock_advance" => {
                m.env().advance_clock(self.num(step, "seconds", iter)?);
                Outcome::Ok(format!("t = {} s", m.env().clock()))
            }
            "fail_next_set_window" => {
                m.env().fail_next_set_window(opal(step)?);
                Outcome::Ok(String::new())
            }
            other => return Err(format!("{other} is not a powernv operation")),
        })
    }
}

/// A host recovery's outcome: how it ended and the freeze count.
fn recovery(r: Result<spapr_platform::Recovery, Errno>, recovered: &str, failed: &str) -> Outcome {
    match r {
        Ok(spapr_platform::Recovery::Recovered { freeze_count }) => {
            Outcome::Ok(format!("{recovered}, freeze {freeze_count}"))
        }
        Ok(spapr_platform::Recovery::Failed { freeze_count }) => {
            Outcome::Ok(format!("{failed}, freeze {freeze_count}"))
        }
        Err(e) => Outcome::Status(e.to_string(), String::new()),
    }
}

/// The kernel's answer to a release nobody claimed: `WARN_ON(!group->owner_cnt)`, nothing
/// changes, the call returns (it is void). Traced as the WARN it is.
fn unbalanced(m: &PowerNv, dev: iommu_core::DeviceId, call: &str) {
    let group = m
        .core()
        .device_group(dev)
        .ok()
        .flatten()
        .map(|g| g.name().to_string());
    m.core().record(
        EventKind::Ownership,
        None,
        group,
        format!("WARN: {call} without a claim (owner_cnt unchanged): nothing released"),
    );
}

/// The step's `opal` field as an OPAL error (checked when the file was read).
fn opal(step: &Step) -> Result<OpalError, String> {
    let name = Engine::text(step, "opal")?;
    crate::scenario::opal_error(name)
        .ok_or_else(|| format!("opal {name:?}: expected parameter or hardware"))
}
