// What TOPCAT's DataLink window does with a {links} document, with the same
// STIL classes (uk.ac.starlink.vo.datalink, from the Debian stilts package):
// read the links table, find its service descriptors, sort each descriptor's
// input parameters into row, fixed and user ones as the form does, and build
// the invocation URL for the #cutout row with a user-entered CIRCLE.
//
// Usage: java -cp STIL_JARS TopcatDatalink.java LINKS_URL CIRCLE
// Prints one "key: value" line per fact, for tests/interop/test_datalink.py.

import java.net.URL;
import java.util.HashMap;
import java.util.Map;

import uk.ac.starlink.table.StarTable;
import uk.ac.starlink.table.StarTableFactory;
import uk.ac.starlink.vo.datalink.LinkColMap;
import uk.ac.starlink.vo.datalink.LinksDoc;
import uk.ac.starlink.vo.datalink.ServiceInvoker;
import uk.ac.starlink.votable.datalink.ServiceDescriptor;
import uk.ac.starlink.votable.datalink.ServiceParam;

public class TopcatDatalink {
    public static void main(String[] args) throws Exception {
        StarTable table = new StarTableFactory(true).makeStarTable(args[0], "votable");
        LinksDoc doc = LinksDoc.randomAccess(LinksDoc.createLinksDoc(table));
        StarTable results = doc.getResultTable();
        LinkColMap cols = doc.getColumnMap();
        System.out.println("rows: " + results.getRowCount());
        for (ServiceDescriptor sd : doc.getServiceDescriptors()) {
            System.out.println("descriptor: " + sd.getDescriptorId() + " " + sd.getStandardId()
                    + " " + sd.getAccessUrl());
            ServiceInvoker invoker = new ServiceInvoker(sd, results);
            for (ServiceParam p : invoker.getRowParams()) {
                System.out.println("row param: " + p.getName());
            }
            for (ServiceParam p : invoker.getFixedParams()) {
                System.out.println("fixed param: " + p.getName() + "=" + p.getValue());
            }
            Map<ServiceParam, String> user = new HashMap<>();
            for (ServiceParam p : invoker.getUserParams()) {
                String[] minmax = p.getMinMax();
                System.out.println("user param: " + p.getName() + " xtype=" + p.getXtype()
                        + " max=" + (minmax == null ? null : minmax[1]));
                if ("CIRCLE".equals(p.getName())) {
                    user.put(p, args[1]);
                }
            }
            for (long irow = 0; irow < results.getRowCount(); irow++) {
                Object[] row = results.getRow(irow);
                if (sd.getDescriptorId().equals(cols.getServiceDef(row))) {
                    URL url = invoker.getUrl(row, user);
                    System.out.println("invoke: " + url);
                }
            }
        }
    }
}
