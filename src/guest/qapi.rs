//! The guest data that qemu-ga reports, as QAPI types: the profile stores them, the
//! commands return them.
//!
//! Field order is QAPI schema declaration order (QEMU `qga/qapi-schema.json`), and
//! [`ToQapi::to_qapi`] inserts members in that order, optional members only when present, as
//! QEMU's output visitor does. The wire writer derives qemu-ga's key order from that
//! insertion order, so replies come out byte-identical.
//!
//! Member names are the QAPI names (kebab-case), so a reply captured from a real agent
//! deserializes into these types unchanged, and unknown members are errors.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::{Object, Value};

/// Conversion to the QObject qemu-ga would return.
pub(crate) trait ToQapi {
    fn to_qapi(&self) -> Value;
}

impl<T: ToQapi> ToQapi for [T] {
    fn to_qapi(&self) -> Value {
        Value::Array(self.iter().map(ToQapi::to_qapi).collect())
    }
}

impl<T: ToQapi> ToQapi for Vec<T> {
    fn to_qapi(&self) -> Value {
        self.as_slice().to_qapi()
    }
}

impl ToQapi for String {
    fn to_qapi(&self) -> Value {
        Value::String(self.clone())
    }
}

/// Builds an object member by member, skipping absent optional members.
struct Members(Object);

impl Members {
    fn new() -> Self {
        Members(Object::new())
    }
    fn put(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key, value.into());
        self
    }
    fn opt<T: Clone + Into<Value>>(self, key: &str, value: &Option<T>) -> Self {
        match value {
            Some(v) => self.put(key, v.clone()),
            None => self,
        }
    }
    fn put_qapi(self, key: &str, value: &impl ToQapi) -> Self {
        self.put(key, value.to_qapi())
    }
    fn opt_qapi(self, key: &str, value: &Option<impl ToQapi>) -> Self {
        match value {
            Some(v) => self.put_qapi(key, v),
            None => self,
        }
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

/// `GuestOSInfo`: what guest-get-osinfo returns (uname plus os-release).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OsInfo {
    /// uname release, e.g. "6.1.0-56-amd64".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// uname version, e.g. "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// uname machine, e.g. "x86_64".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// os-release ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// os-release NAME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// os-release PRETTY_NAME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
    /// os-release VERSION.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// os-release VERSION_ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// os-release VARIANT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// os-release VARIANT_ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_id: Option<String>,
}

impl ToQapi for OsInfo {
    fn to_qapi(&self) -> Value {
        Members::new()
            .opt("kernel-release", &self.kernel_release)
            .opt("kernel-version", &self.kernel_version)
            .opt("machine", &self.machine)
            .opt("id", &self.id)
            .opt("name", &self.name)
            .opt("pretty-name", &self.pretty_name)
            .opt("version", &self.version)
            .opt("version-id", &self.version_id)
            .opt("variant", &self.variant)
            .opt("variant-id", &self.variant_id)
            .done()
    }
}

/// `GuestTimezone`: what guest-get-timezone returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Timezone {
    /// The zone abbreviation, e.g. "UTC" or "CET"; absent when the guest has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Offset to UTC in seconds, east positive.
    pub offset: i64,
}

impl ToQapi for Timezone {
    fn to_qapi(&self) -> Value {
        Members::new()
            .opt("zone", &self.zone)
            .put("offset", self.offset)
            .done()
    }
}

/// `GuestUser`: one logged-in user, as guest-get-users returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct User {
    /// The user name.
    pub user: String,
    /// Earliest login time of the user, in fractional seconds since the epoch.
    pub login_time: f64,
    /// Logon domain (Windows guests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl ToQapi for User {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("user", self.user.as_str())
            .put("login-time", self.login_time)
            .opt("domain", &self.domain)
            .done()
    }
}

/// `GuestLogicalProcessor`: one vCPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Vcpu {
    /// The CPU number (cpuN in sysfs).
    pub logical_id: i64,
    /// Whether the CPU is online.
    pub online: bool,
    /// Whether the CPU can go offline: false when sysfs has no `online` file (cpu0 on
    /// x86), which also makes offlining it fail. Linux agents always report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_offline: Option<bool>,
}

impl ToQapi for Vcpu {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("logical-id", self.logical_id)
            .put("online", self.online)
            .opt("can-offline", &self.can_offline)
            .done()
    }
}

/// `GuestMemoryBlock`: one sysfs memory block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MemoryBlock {
    /// The block number (memoryN in sysfs).
    pub phys_index: u64,
    /// Whether the block is online.
    pub online: bool,
    /// Whether the block is removable; offlining a block that is not fails with EBUSY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_offline: Option<bool>,
}

impl ToQapi for MemoryBlock {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("phys-index", self.phys_index)
            .put("online", self.online)
            .opt("can-offline", &self.can_offline)
            .done()
    }
}

/// `GuestMemoryBlockInfo`: what guest-get-memory-block-info returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MemoryBlockInfo {
    /// The size of one memory block in bytes.
    pub size: u64,
}

impl ToQapi for MemoryBlockInfo {
    fn to_qapi(&self) -> Value {
        Members::new().put("size", self.size).done()
    }
}

/// `GuestIpAddressType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IpAddressType {
    Ipv4,
    Ipv6,
}

impl IpAddressType {
    fn name(self) -> &'static str {
        match self {
            IpAddressType::Ipv4 => "ipv4",
            IpAddressType::Ipv6 => "ipv6",
        }
    }
}

/// `GuestIpAddress`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IpAddress {
    /// The address in text form.
    pub ip_address: String,
    /// The address family.
    pub ip_address_type: IpAddressType,
    /// The network prefix length.
    pub prefix: i64,
}

impl ToQapi for IpAddress {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("ip-address", self.ip_address.as_str())
            .put("ip-address-type", self.ip_address_type.name())
            .put("prefix", self.prefix)
            .done()
    }
}

/// `GuestNetworkInterfaceStat`: /proc/net/dev counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InterfaceStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_dropped: u64,
}

impl ToQapi for InterfaceStats {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("rx-bytes", self.rx_bytes)
            .put("rx-packets", self.rx_packets)
            .put("rx-errs", self.rx_errs)
            .put("rx-dropped", self.rx_dropped)
            .put("tx-bytes", self.tx_bytes)
            .put("tx-packets", self.tx_packets)
            .put("tx-errs", self.tx_errs)
            .put("tx-dropped", self.tx_dropped)
            .done()
    }
}

/// `GuestNetworkInterface`: one interface, in the order getifaddrs reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkInterface {
    /// Interface name, e.g. "eth0".
    pub name: String,
    /// MAC address, e.g. "52:54:00:12:34:56".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_address: Option<String>,
    /// Addresses; absent when the interface has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_addresses: Option<Vec<IpAddress>>,
    /// Counters; absent when /proc/net/dev has no line for the interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<InterfaceStats>,
}

impl ToQapi for NetworkInterface {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("name", self.name.as_str())
            .opt("hardware-address", &self.hardware_address)
            .opt_qapi("ip-addresses", &self.ip_addresses)
            .opt_qapi("statistics", &self.statistics)
            .done()
    }
}

/// `GuestNetworkRoute` (qemu-ga 9.1 and later): one routing table entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkRoute {
    pub iface: String,
    pub destination: String,
    pub metric: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irtt: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refcnt: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#use: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desprefixlen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srcprefixlen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexthop: Option<String>,
    /// 4 or 6.
    pub version: i64,
}

impl ToQapi for NetworkRoute {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("iface", self.iface.as_str())
            .put("destination", self.destination.as_str())
            .put("metric", self.metric)
            .opt("gateway", &self.gateway)
            .opt("mask", &self.mask)
            .opt("irtt", &self.irtt)
            .opt("flags", &self.flags)
            .opt("refcnt", &self.refcnt)
            .opt("use", &self.r#use)
            .opt("window", &self.window)
            .opt("mtu", &self.mtu)
            .opt("desprefixlen", &self.desprefixlen)
            .opt("source", &self.source)
            .opt("srcprefixlen", &self.srcprefixlen)
            .opt("nexthop", &self.nexthop)
            .put("version", self.version)
            .done()
    }
}

/// `GuestLoadAverage` (qemu-ga 10.0 and later).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoadAverage {
    pub load1m: f64,
    pub load5m: f64,
    pub load15m: f64,
}

impl ToQapi for LoadAverage {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("load1m", self.load1m)
            .put("load5m", self.load5m)
            .put("load15m", self.load15m)
            .done()
    }
}

/// `GuestDiskBusType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBusType {
    Ide,
    Fdc,
    Scsi,
    Virtio,
    Xen,
    Usb,
    Uml,
    Sata,
    Sd,
    Unknown,
    Ieee1394,
    Ssa,
    Fibre,
    Raid,
    Iscsi,
    Sas,
    Mmc,
    Virtual,
    FileBackedVirtual,
    Nvme,
}

impl DiskBusType {
    fn name(self) -> &'static str {
        match self {
            DiskBusType::Ide => "ide",
            DiskBusType::Fdc => "fdc",
            DiskBusType::Scsi => "scsi",
            DiskBusType::Virtio => "virtio",
            DiskBusType::Xen => "xen",
            DiskBusType::Usb => "usb",
            DiskBusType::Uml => "uml",
            DiskBusType::Sata => "sata",
            DiskBusType::Sd => "sd",
            DiskBusType::Unknown => "unknown",
            DiskBusType::Ieee1394 => "ieee1394",
            DiskBusType::Ssa => "ssa",
            DiskBusType::Fibre => "fibre",
            DiskBusType::Raid => "raid",
            DiskBusType::Iscsi => "iscsi",
            DiskBusType::Sas => "sas",
            DiskBusType::Mmc => "mmc",
            DiskBusType::Virtual => "virtual",
            DiskBusType::FileBackedVirtual => "file-backed-virtual",
            DiskBusType::Nvme => "nvme",
        }
    }
}

/// `GuestPCIAddress`: fields are -1 when unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PciAddress {
    pub domain: i64,
    pub bus: i64,
    pub slot: i64,
    pub function: i64,
}

impl ToQapi for PciAddress {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("domain", self.domain)
            .put("bus", self.bus)
            .put("slot", self.slot)
            .put("function", self.function)
            .done()
    }
}

/// `GuestCCWAddress` (s390x).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CcwAddress {
    pub cssid: i64,
    pub ssid: i64,
    pub subchno: i64,
    pub devno: i64,
}

impl ToQapi for CcwAddress {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("cssid", self.cssid)
            .put("ssid", self.ssid)
            .put("subchno", self.subchno)
            .put("devno", self.devno)
            .done()
    }
}

/// `GuestDiskAddress`: where a disk sits on its bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskAddress {
    pub pci_controller: PciAddress,
    pub bus_type: DiskBusType,
    pub bus: i64,
    pub target: i64,
    pub unit: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The device node, e.g. "/dev/vda".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ccw_address: Option<CcwAddress>,
}

impl ToQapi for DiskAddress {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put_qapi("pci-controller", &self.pci_controller)
            .put("bus-type", self.bus_type.name())
            .put("bus", self.bus)
            .put("target", self.target)
            .put("unit", self.unit)
            .opt("serial", &self.serial)
            .opt("dev", &self.dev)
            .opt_qapi("ccw-address", &self.ccw_address)
            .done()
    }
}

/// `GuestNVMeSmart`: the NVMe SMART log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NvmeSmart {
    pub critical_warning: i64,
    pub temperature: i64,
    pub available_spare: i64,
    pub available_spare_threshold: i64,
    pub percentage_used: i64,
    pub data_units_read_lo: u64,
    pub data_units_read_hi: u64,
    pub data_units_written_lo: u64,
    pub data_units_written_hi: u64,
    pub host_read_commands_lo: u64,
    pub host_read_commands_hi: u64,
    pub host_write_commands_lo: u64,
    pub host_write_commands_hi: u64,
    pub controller_busy_time_lo: u64,
    pub controller_busy_time_hi: u64,
    pub power_cycles_lo: u64,
    pub power_cycles_hi: u64,
    pub power_on_hours_lo: u64,
    pub power_on_hours_hi: u64,
    pub unsafe_shutdowns_lo: u64,
    pub unsafe_shutdowns_hi: u64,
    pub media_errors_lo: u64,
    pub media_errors_hi: u64,
    pub number_of_error_log_entries_lo: u64,
    pub number_of_error_log_entries_hi: u64,
}

/// `GuestDiskSmart`: a union on `type`; only NVMe disks carry SMART data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum DiskSmart {
    Nvme(NvmeSmart),
}

impl ToQapi for DiskSmart {
    fn to_qapi(&self) -> Value {
        // The union's base member comes first, then the branch's members.
        let DiskSmart::Nvme(s) = self;
        Members::new()
            .put("type", "nvme")
            .put("critical-warning", s.critical_warning)
            .put("temperature", s.temperature)
            .put("available-spare", s.available_spare)
            .put("available-spare-threshold", s.available_spare_threshold)
            .put("percentage-used", s.percentage_used)
            .put("data-units-read-lo", s.data_units_read_lo)
            .put("data-units-read-hi", s.data_units_read_hi)
            .put("data-units-written-lo", s.data_units_written_lo)
            .put("data-units-written-hi", s.data_units_written_hi)
            .put("host-read-commands-lo", s.host_read_commands_lo)
            .put("host-read-commands-hi", s.host_read_commands_hi)
            .put("host-write-commands-lo", s.host_write_commands_lo)
            .put("host-write-commands-hi", s.host_write_commands_hi)
            .put("controller-busy-time-lo", s.controller_busy_time_lo)
            .put("controller-busy-time-hi", s.controller_busy_time_hi)
            .put("power-cycles-lo", s.power_cycles_lo)
            .put("power-cycles-hi", s.power_cycles_hi)
            .put("power-on-hours-lo", s.power_on_hours_lo)
            .put("power-on-hours-hi", s.power_on_hours_hi)
            .put("unsafe-shutdowns-lo", s.unsafe_shutdowns_lo)
            .put("unsafe-shutdowns-hi", s.unsafe_shutdowns_hi)
            .put("media-errors-lo", s.media_errors_lo)
            .put("media-errors-hi", s.media_errors_hi)
            .put(
                "number-of-error-log-entries-lo",
                s.number_of_error_log_entries_lo,
            )
            .put(
                "number-of-error-log-entries-hi",
                s.number_of_error_log_entries_hi,
            )
            .done()
    }
}

/// `GuestDiskInfo`: one block device, as guest-get-disks returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskInfo {
    /// The device node, e.g. "/dev/vda".
    pub name: String,
    /// Whether this is a partition.
    pub partition: bool,
    /// Devices this one is built on (for LVM, LUKS, partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Vec<String>>,
    /// The disk's address; absent for virtual devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<DiskAddress>,
    /// A device-mapper name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// SMART data (NVMe only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smart: Option<DiskSmart>,
}

impl ToQapi for DiskInfo {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("name", self.name.as_str())
            .put("partition", self.partition)
            .opt_qapi("dependencies", &self.dependencies)
            .opt_qapi("address", &self.address)
            .opt("alias", &self.alias)
            .opt_qapi("smart", &self.smart)
            .done()
    }
}

/// `GuestDiskStats`: /proc/diskstats counters, each optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_sectors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ios: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_merges: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_sectors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_ios: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_merges: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard_sectors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard_ios: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard_merges: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_ios: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ticks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_ticks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard_ticks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_ticks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ios_pgr: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ticks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_ticks: Option<u64>,
}

impl ToQapi for DiskStats {
    fn to_qapi(&self) -> Value {
        Members::new()
            .opt("read-sectors", &self.read_sectors)
            .opt("read-ios", &self.read_ios)
            .opt("read-merges", &self.read_merges)
            .opt("write-sectors", &self.write_sectors)
            .opt("write-ios", &self.write_ios)
            .opt("write-merges", &self.write_merges)
            .opt("discard-sectors", &self.discard_sectors)
            .opt("discard-ios", &self.discard_ios)
            .opt("discard-merges", &self.discard_merges)
            .opt("flush-ios", &self.flush_ios)
            .opt("read-ticks", &self.read_ticks)
            .opt("write-ticks", &self.write_ticks)
            .opt("discard-ticks", &self.discard_ticks)
            .opt("flush-ticks", &self.flush_ticks)
            .opt("ios-pgr", &self.ios_pgr)
            .opt("total-ticks", &self.total_ticks)
            .opt("weight-ticks", &self.weight_ticks)
            .done()
    }
}

/// `GuestDiskStatsInfo`: one /proc/diskstats line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskStatsInfo {
    /// The device name, e.g. "vda".
    pub name: String,
    pub major: u64,
    pub minor: u64,
    pub stats: DiskStats,
}

impl ToQapi for DiskStatsInfo {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("name", self.name.as_str())
            .put("major", self.major)
            .put("minor", self.minor)
            .put_qapi("stats", &self.stats)
            .done()
    }
}

/// `GuestLinuxCpuStats`: one /proc/stat cpu line, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LinuxCpuStats {
    pub cpu: i64,
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iowait: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softirq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steal: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guestnice: Option<u64>,
}

/// `GuestCpuStats`: a union on `type`; "linux" is the only kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CpuStats {
    Linux(LinuxCpuStats),
}

impl ToQapi for CpuStats {
    fn to_qapi(&self) -> Value {
        let CpuStats::Linux(s) = self;
        Members::new()
            .put("type", "linux")
            .put("cpu", s.cpu)
            .put("user", s.user)
            .put("nice", s.nice)
            .put("system", s.system)
            .put("idle", s.idle)
            .opt("iowait", &s.iowait)
            .opt("irq", &s.irq)
            .opt("softirq", &s.softirq)
            .opt("steal", &s.steal)
            .opt("guest", &s.guest)
            .opt("guestnice", &s.guestnice)
            .done()
    }
}

/// What guest-fstrim does on one filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TrimOutcome {
    /// FITRIM succeeds and reports this many bytes trimmed.
    Trimmed(u64),
    /// FITRIM fails; the text is reported as the path's `error`, e.g.
    /// "trim not supported" or "failed to trim: Input/output error".
    Error(String),
}

impl Default for TrimOutcome {
    fn default() -> Self {
        TrimOutcome::Trimmed(0)
    }
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_default_trim(t: &TrimOutcome) -> bool {
    *t == TrimOutcome::default()
}

/// `GuestFilesystemInfo`: one mounted block-device filesystem, in the order
/// guest-get-fsinfo reports them (the reverse of /proc/self/mountinfo), plus how it
/// behaves under fsfreeze and fstrim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FilesystemInfo {
    /// The device name, e.g. "vda" or "dm-0". Mounts of one device freeze once.
    pub name: String,
    /// The mount point, e.g. "/".
    pub mountpoint: String,
    /// The filesystem type, e.g. "ext4".
    pub r#type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Capacity for privileged users; reported by qemu-ga 9.1 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes_privileged: Option<u64>,
    /// The disks the filesystem lies on (may be empty).
    pub disk: Vec<DiskAddress>,
    /// Not reported: whether FIFREEZE works on it (false: EOPNOTSUPP, which qemu-ga
    /// skips without counting). Default true.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub freezable: bool,
    /// Not reported: what guest-fstrim does on it. Default `{"trimmed": 0}`.
    #[serde(default, skip_serializing_if = "is_default_trim")]
    pub trim: TrimOutcome,
}

impl FilesystemInfo {
    pub(crate) fn to_qapi_versioned(&self, with_privileged: bool) -> Value {
        let privileged = if with_privileged {
            self.total_bytes_privileged
        } else {
            None
        };
        Members::new()
            .put("name", self.name.as_str())
            .put("mountpoint", self.mountpoint.as_str())
            .put("type", self.r#type.as_str())
            .opt("used-bytes", &self.used_bytes)
            .opt("total-bytes", &self.total_bytes)
            .opt("total-bytes-privileged", &privileged)
            .put_qapi("disk", &self.disk)
            .done()
    }
}

/// `GuestAuthorizedKeys`.
pub(crate) fn authorized_keys(keys: Vec<String>) -> Value {
    Members::new().put_qapi("keys", &keys).done()
}

/// `GuestFileRead`.
pub(crate) fn file_read(count: i64, buf_b64: String, eof: bool) -> Value {
    Members::new()
        .put("count", count)
        .put("buf-b64", buf_b64)
        .put("eof", eof)
        .done()
}

/// `GuestFileWrite`.
pub(crate) fn file_write(count: i64, eof: bool) -> Value {
    Members::new().put("count", count).put("eof", eof).done()
}

/// `GuestFileSeek`.
pub(crate) fn file_seek(position: i64, eof: bool) -> Value {
    Members::new()
        .put("position", position)
        .put("eof", eof)
        .done()
}

/// `GuestExec`.
pub(crate) fn exec(pid: i64) -> Value {
    Members::new().put("pid", pid).done()
}

/// `GuestHostName`.
pub(crate) fn host_name(name: &str) -> Value {
    Members::new().put("host-name", name).done()
}

/// `GuestExecStatus`, members in schema order.
#[derive(Debug, Default)]
pub(crate) struct ExecStatus {
    pub exited: bool,
    pub exitcode: Option<i64>,
    pub signal: Option<i64>,
    pub out_data: Option<String>,
    pub err_data: Option<String>,
    pub out_truncated: Option<bool>,
    pub err_truncated: Option<bool>,
}

impl ToQapi for ExecStatus {
    fn to_qapi(&self) -> Value {
        Members::new()
            .put("exited", self.exited)
            .opt("exitcode", &self.exitcode)
            .opt("signal", &self.signal)
            .opt("out-data", &self.out_data)
            .opt("err-data", &self.err_data)
            .opt("out-truncated", &self.out_truncated)
            .opt("err-truncated", &self.err_truncated)
            .done()
    }
}

/// `GuestFilesystemTrimResult`.
pub(crate) fn trim_result(
    path: &str,
    trimmed: Option<i64>,
    minimum: Option<i64>,
    error: Option<String>,
) -> Value {
    Members::new()
        .put("path", path)
        .opt("trimmed", &trimmed)
        .opt("minimum", &minimum)
        .opt("error", &error)
        .done()
}

/// `GuestFilesystemTrimResponse`.
pub(crate) fn trim_response(paths: Vec<Value>) -> Value {
    Members::new().put("paths", Value::Array(paths)).done()
}

/// `GuestMemoryBlockResponse`.
pub(crate) fn memory_block_response(
    phys_index: u64,
    response: &str,
    error_code: Option<i64>,
) -> Value {
    Members::new()
        .put("phys-index", phys_index)
        .put("response", response)
        .opt("error-code", &error_code)
        .done()
}
