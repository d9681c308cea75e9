package dicom

// ImplementationClassUID identifies Ward in A-ASSOCIATE and in the File Meta
// Information (0002,0012). Placeholder root under the UK NHS/Medical Connections
// free UID arc; replace when Ward has its own root.
const ImplementationClassUID = "1.2.826.0.1.3680043.10.1432.1"

// ImplementationVersionName is sent as (0002,0013) and in A-ASSOCIATE; at most
// 16 characters.
const ImplementationVersionName = "WARD_0.1"
