"""The device side of device trust (docs/device-trust.md): the TPM (through tpm2-pytss) or a
software key, the device's local state, its profile, and the enrollment and authentication
ceremonies that ``bsh device enroll`` and ``bsh login`` run."""
