// PixelmedDeid de-identifies DICOM files with PixelMed's library as a
// strict PS3.15 Basic Application Level Confidentiality Profile: every
// "keep" option off, UIDs remapped, dates removed, private attributes,
// overlays and curves removed. Ward's tests compare its output with Ward's.
//
//   java -cp /usr/share/java/pixelmed.jar PixelmedDeid.java OUTDIR IN...
import com.pixelmed.dicom.*;
import java.io.File;

public class PixelmedDeid {
    public static void main(String[] args) throws Exception {
        File outDir = new File(args[0]);
        for (int i = 1; i < args.length; i++) {
            File in = new File(args[i]);
            File out = new File(outDir, in.getName());
            try {
                AttributeList list = new AttributeList();
                list.read(in.getPath());
                String ts = Attribute.getSingleStringValueOrEmptyString(list, TagFromName.TransferSyntaxUID);
                list.removeGroupLengthAttributes();
                list.removeMetaInformationHeaderAttributes();
                list.removePrivateAttributes();
                list.removeOverlayAttributes();
                list.removeCurveAttributes();
                ClinicalTrialsAttributes.removeClinicalTrialsAttributes(list);
                ClinicalTrialsAttributes.removeOrNullIdentifyingAttributes(list,
                    ClinicalTrialsAttributes.HandleUIDs.remap,
                    false, false, false, // descriptors, series descriptors, protocol name
                    false, false, false, // patient characteristics, device, institution
                    ClinicalTrialsAttributes.HandleDates.remove, null, null);
                if (ts.isEmpty()) {
                    ts = TransferSyntax.ExplicitVRLittleEndian;
                }
                FileMetaInformation.addFileMetaInformation(list, ts, "PIXELMEDDEID");
                list.write(out, ts, true, true);
                System.out.println("ok " + in.getName());
            } catch (Exception e) {
                System.out.println("fail " + in.getName() + ": " + e);
            }
        }
    }
}
